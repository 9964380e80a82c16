"""Matplotlib figures (Agg, no display): the only module of the package that imports matplotlib.

Figures are built on ``matplotlib.figure.Figure`` with an Agg canvas, so importing this module
neither needs a display nor changes the pyplot backend of the caller. Each function writes one PNG
(creating parent folders) and returns its path.
"""
import os

import numpy

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from chainer_influence.devices import to_host
from chainer_influence.files import atomic_write


def _figure(width, height):
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path, dpi=100):
    """Write ``fig`` to ``path`` atomically: a killed run leaves the previous figure intact."""
    kind = os.path.splitext(path)[1].lstrip('.').lower() or 'png'
    return atomic_write(path, lambda f: fig.savefig(f, dpi=dpi, format=kind))


def _square_side(size):
    side = int(round(numpy.sqrt(size)))
    return side if side * side == size else None


def as_image(x, value_range=(0., 1.)):
    """An example as an image for ``imshow``: (H, W) grey or (H, W, 3) colour in [0, 1].

    ``x``: grey (H*W,) with a square side (784, 64, ...), (H, W), (1, H, W); colour (3, H, W)
    or flat (3*H*W,) in CHW order. Values are mapped from ``value_range`` to [0, 1] and clipped.
    """
    x = to_host(x, numpy.float64)
    if x.ndim == 1:
        side = _square_side(x.size)
        colour_side = _square_side(x.size // 3) if x.size % 3 == 0 else None
        if side is not None:
            x = x.reshape(side, side)
        elif colour_side is not None:
            x = x.reshape(3, colour_side, colour_side)
        else:
            raise ValueError('cannot infer an image shape for {} values'.format(x.size))
    if x.ndim == 3 and x.shape[0] in (1, 3):
        x = x[0] if x.shape[0] == 1 else x.transpose(1, 2, 0)
    if x.ndim != 2 and not (x.ndim == 3 and x.shape[2] == 3):
        raise ValueError('cannot show an example of shape {} as an image'.format(x.shape))
    low, high = value_range
    return numpy.clip((x - low) / (high - low), 0., 1.)


def _example(images, index):
    """The input of example ``index``: ``images[index]``, or its element 0 for a tuple."""
    item = images[int(index)]
    return item[0] if isinstance(item, tuple) else item


def can_show_as_image(x):
    """Whether :func:`as_image` can show example input ``x`` (else use the score-bar figures)."""
    try:
        as_image(x)
    except ValueError:
        return False
    return True


def detect_value_range(samples):
    """The value range of image inputs from a sample of them (an array of examples):
    (0, 1), (-1, 1) or (0, 255) when the values fit one of these usual ranges, else their
    (min, max)."""
    values = to_host(samples, numpy.float64)
    low, high = float(values.min()), float(values.max())
    for candidate in ((0., 1.), (-1., 1.), (0., 255.)):
        if candidate[0] <= low and high <= candidate[1]:
            return candidate
    return (low, high) if high > low else (low, low + 1.)


def _label_text(report, label):
    name = report.label_name(label)
    return str(int(label)) if name is None else name


_COLOURS = {'helpful': 'tab:green', 'harmful': 'tab:red', 'self': 'tab:purple'}
_LEGEND = {'helpful': 'helpful: influence < 0 (up-weighting it lowers the test loss)',
           'harmful': 'harmful: influence > 0 (up-weighting it raises the test loss)',
           'self': 'self-influence: large = unusual for its label (check for mislabels)'}
FONT_SIZE = 10


def _show(ax, image, title, colour='black'):
    ax.imshow(image, cmap='gray', vmin=0., vmax=1., interpolation='nearest')
    ax.set_title(title, fontsize=FONT_SIZE, color=colour)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():  # a coloured frame marks the kind of tile
        spine.set_color(colour)
        spine.set_linewidth(2.5 if colour != 'black' else 0.8)


def _legend(fig, kinds):
    from matplotlib.patches import Patch
    fig.legend(handles=[Patch(color=_COLOURS[k], label=_LEGEND[k]) for k in kinds],
               loc='lower center', ncol=len(kinds), fontsize=FONT_SIZE + 1, frameon=False)


def _sample_inputs(images, indices):
    return numpy.stack([to_host(_example(images, i), numpy.float64) for i in indices])


def _test_title(report, r):
    title = 'test #{}\nlabel {}'.format(
        report.test_indices[r], _label_text(report, report.test_labels[r]))
    if report.predicted_labels is not None:
        title += '\npred {}'.format(_label_text(report, report.predicted_labels[r]))
    return title


def _tile_title(report, j, score):
    """Training index, label and score: everything a tile needs, on three short lines (a class
    name as wide as the tile would run into its neighbour's title on one line)."""
    return '#{}\n{}\n{:+.2g}'.format(int(j), _label_text(report, report.train_labels[j]), score)


def plot_top_influential(report, test_images, train_images, path, n_show=None,
                         value_range=None):
    """Grid: per test point (row) its image, then its top-k helpful and top-k harmful examples.

    Args:
        report (InfluenceReport): scores and labels; its ``top_k`` sets k.
        test_images, train_images: arrays or datasets of tuples (element 0 is the input),
            indexed by ``report.test_indices`` and by training index.
        path (str): the PNG to write.
        n_show (int or None): show only the first n_show test points.
        value_range: (low, high) of the inputs, mapped to black and white; None detects it from
            the shown examples (see :func:`detect_value_range`).

    Each tile is titled with the training index (``#j``), its label (class names when the report
    has them) and its influence; green frames mark helpful examples, red frames harmful ones, as
    the legend says.
    """
    ranked = report.rankings()
    n = len(report.test_indices) if n_show is None else min(n_show, len(report.test_indices))
    rows = [(report, ranked, m, _test_title(report, m)) for m in range(n)]
    return _ranked_grid(rows, test_images, train_images, path, value_range)


def plot_ranking_comparison(reports, test_images, train_images, path, n_show=None,
                            value_range=None):
    """Top-k lists of several scorings of the same test points, one row per (test point, scoring).

    Args:
        reports (dict): row title (e.g. ``'influence'``, ``'RelatIF'``) -> InfluenceReport; all
            on the same test points in the same order.
        test_images, train_images, path, n_show, value_range: as for
            :func:`plot_top_influential`.

    Each row starts with the test image, titled with the scoring's name, then its top-k helpful
    and top-k harmful training images, as in :func:`plot_top_influential`.
    """
    names = list(reports)
    first = reports[names[0]]
    for name in names[1:]:
        if list(reports[name].test_indices) != list(first.test_indices):
            raise ValueError('the reports {!r} and {!r} are on different test points'.format(
                names[0], name))
    ranked = {name: report.rankings() for name, report in reports.items()}
    n = len(first.test_indices) if n_show is None else min(n_show, len(first.test_indices))
    rows = []
    for m in range(n):
        for name in names:
            report = reports[name]
            title = '{}\ntest #{} ({})'.format(name, report.test_indices[m],
                                               _label_text(report, report.test_labels[m]))
            rows.append((report, ranked[name], m, title))
    return _ranked_grid(rows, test_images, train_images, path, value_range)


def _ranked_grid(rows, test_images, train_images, path, value_range):
    """One row per ``(report, ranked, m, title)``: test point m's image titled ``title``, then
    its top-k helpful and top-k harmful training images (``ranked`` = ``report.rankings()``)."""
    k = max(ranked['helpful'].shape[1] for _, ranked, _, _ in rows)
    if value_range is None:
        shown = [j for _, ranked, m, _ in rows for kind in ('helpful', 'harmful')
                 for j in ranked[kind][m]]
        tests = [report.test_indices[m] for report, _, m, _ in rows]
        value_range = detect_value_range(numpy.concatenate([
            _sample_inputs(train_images, shown).ravel(),
            _sample_inputs(test_images, tests).ravel()]))
    n_rows, cols = len(rows), 1 + 2 * k
    fig = _figure(1.35 * cols, 1.95 * n_rows + 0.6)
    for r, (report, ranked, m, title) in enumerate(rows):
        ax = fig.add_subplot(n_rows, cols, r * cols + 1)
        _show(ax, as_image(_example(test_images, report.test_indices[m]), value_range), title)
        for side, kind in enumerate(('helpful', 'harmful')):
            for rank, j in enumerate(ranked[kind][m]):
                ax = fig.add_subplot(n_rows, cols, r * cols + 2 + side * k + rank)
                _show(ax, as_image(_example(train_images, j), value_range),
                      _tile_title(report, j, report.scores[m, j]), _COLOURS[kind])
    _legend(fig, ('helpful', 'harmful'))
    fig.tight_layout(rect=(0, 0.6 / (1.95 * n_rows + 0.6), 1, 1))
    return _save(fig, path)


def _bar_label(report, j):
    """``#j (label)``: a training example's bar label."""
    return '#{} ({})'.format(int(j), _label_text(report, report.train_labels[j]))


def _bars(ax, labels, values, colours, title):
    y = numpy.arange(len(values))[::-1]
    ax.barh(y, values, color=colours)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=FONT_SIZE - 1)
    ax.axvline(0, color='grey', linewidth=0.8)
    ax.set_title(title, fontsize=FONT_SIZE)
    ax.tick_params(axis='x', labelsize=FONT_SIZE - 1)


def plot_top_scores(report, path, n_show=None):
    """For inputs that are not images: per test point, horizontal bars of its top-k helpful
    (green, negative) and harmful (red, positive) influence scores, each labelled with the
    training index and label."""
    ranked = report.rankings()
    rows = len(report.test_indices) if n_show is None else min(n_show, len(report.test_indices))
    k = ranked['helpful'].shape[1]
    cols = min(rows, 3)
    grid_rows = -(-rows // cols)
    height = 0.3 * 2 * k + 1.2
    fig = _figure(5.0 * cols, height * grid_rows + 0.6)
    for r in range(rows):
        ax = fig.add_subplot(grid_rows, cols, r + 1)
        indices = list(ranked['harmful'][r]) + list(ranked['helpful'][r][::-1])
        values = [report.scores[r, j] for j in indices]
        colours = [_COLOURS['harmful']] * k + [_COLOURS['helpful']] * k
        labels = [_bar_label(report, j) for j in indices]
        _bars(ax, labels, values, colours, _test_title(report, r).replace('\n', ': '))
    _legend(fig, ('helpful', 'harmful'))
    fig.tight_layout(rect=(0, 0.6 / (height * grid_rows + 0.6), 1, 1))
    return _save(fig, path)


def plot_top_self_influence(report, train_images, path, value_range=None, images=True):
    """The top-k training examples by self-influence (the mislabel candidates), largest first:
    a grid of images titled ``#index (label)`` and score, or with ``images=False`` bars."""
    top = report.self_influence_top()
    if not top:
        raise ValueError('the report has no self-influence')
    indices = [e['train_index'] for e in top]
    if not images:
        fig = _figure(6, 0.3 * len(top) + 1.4)
        ax = fig.add_subplot(1, 1, 1)
        labels = [_bar_label(report, j) for j in indices]
        _bars(ax, labels, [e['score'] for e in top], _COLOURS['self'],
              'largest self-influence')
        _legend(fig, ('self',))
        fig.tight_layout(rect=(0, 0.5 / (0.3 * len(top) + 1.4), 1, 1))
        return _save(fig, path)
    if value_range is None:
        value_range = detect_value_range(_sample_inputs(train_images, indices))
    cols = min(len(top), 10)
    rows = -(-len(top) // cols)
    height = 1.75 * rows + 1.2
    fig = _figure(1.35 * cols, height)
    for n, entry in enumerate(top):
        ax = fig.add_subplot(rows, cols, n + 1)
        _show(ax, as_image(_example(train_images, entry['train_index']), value_range),
              _tile_title(report, entry['train_index'], entry['score']), _COLOURS['self'])
    fig.suptitle('training examples of largest self-influence', fontsize=FONT_SIZE + 1)
    _legend(fig, ('self',))
    fig.tight_layout(rect=(0, 0.5 / height, 1, 1 - 0.4 / height))
    return _save(fig, path)


def plot_self_influence(self_influence, path, flipped=None, bins=50):
    """Histogram (log y) of self-influence (N,); ``flipped`` (indices or a boolean (N,) mask)
    marks mislabelled examples in a second colour."""
    values = to_host(self_influence, numpy.float64)
    mask = numpy.zeros(len(values), dtype=bool)
    if flipped is not None:
        mask[numpy.asarray(flipped)] = True
    fig = _figure(6, 4)
    ax = fig.add_subplot(1, 1, 1)
    edges = numpy.histogram_bin_edges(values, bins=bins)
    ax.hist([values[~mask], values[mask]], bins=edges, stacked=True, log=True,
            color=['tab:blue', 'tab:red'], label=['clean', 'flipped'])
    if flipped is not None:
        ax.legend()
    ax.set_xlabel('self-influence')
    ax.set_ylabel('training examples')
    fig.tight_layout()
    return _save(fig, path)


def plot_loo_scatter(predicted, actual, path, title=None):
    """Predicted vs actual change of test loss (leave-one-out), y = x line, Pearson R in the title.
    """
    predicted = to_host(predicted, numpy.float64)
    actual = to_host(actual, numpy.float64)
    r = numpy.corrcoef(predicted, actual)[0, 1]
    fig = _figure(5, 5)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(actual, predicted, s=12)
    low = min(predicted.min(), actual.min())
    high = max(predicted.max(), actual.max())
    ax.plot([low, high], [low, high], color='grey', linestyle='--', linewidth=1)
    ax.set_xlabel('actual change in test loss (retraining)')
    ax.set_ylabel('predicted change in test loss (influence)')
    heading = 'Pearson R = {:.3f}'.format(r)
    ax.set_title(heading if title is None else '{}\n{}'.format(title, heading))
    fig.tight_layout()
    return _save(fig, path)


def plot_detection_curves(curves, path):
    """Mislabel detection: ``curves`` maps a method name to (fractions_checked, fractions_found).
    """
    fig = _figure(5, 4)
    ax = fig.add_subplot(1, 1, 1)
    for name, (checked, found) in curves.items():
        ax.plot(to_host(checked), to_host(found), label=name)
    ax.plot([0, 1], [0, 1], color='grey', linestyle=':', linewidth=1, label='chance')
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel('fraction of training data checked')
    ax.set_ylabel('fraction of flipped labels found')
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def plot_perturbations(originals, perturbed, path, targets=None, titles=None, epsilon=None,
                       value_range=(0., 1.)):
    """Training-set attack: per row, [the target test image,] the original training image, the
    attacked one and their difference (attacked - original, blue < 0 < red, scale +-epsilon).

    Args:
        originals, perturbed: (R, ...) training inputs before and after the attack.
        targets: (R, ...) the target test images, or None to leave that column out.
        titles (list of str): one line of text per row, above its first image.
        epsilon (float): colour scale of the differences; None: their largest |value|.
        value_range: the pixel range of the inputs.
    """
    originals, perturbed = to_host(originals, numpy.float64), to_host(perturbed, numpy.float64)
    differences = perturbed - originals
    if epsilon is None:
        epsilon = max(float(numpy.abs(differences).max()), 1e-12)
    rows = len(originals)
    columns = ['original', 'attacked', 'difference']
    if targets is not None:
        columns.insert(0, 'target (test)')
    fig = _figure(1.7 * len(columns), 2.2 * max(rows, 1))
    for r in range(rows):
        images = [as_image(originals[r], value_range), as_image(perturbed[r], value_range),
                  as_image(differences[r], (-epsilon, epsilon))]
        if targets is not None:
            images.insert(0, as_image(targets[r], value_range))
        for c, (name, image) in enumerate(zip(columns, images)):
            ax = fig.add_subplot(rows, len(columns), r * len(columns) + c + 1)
            title = name if titles is None or c > 0 else '{}\n{}'.format(titles[r], name)
            if name == 'difference':
                ax.imshow(image, cmap='RdBu_r', vmin=0., vmax=1., interpolation='nearest')
                ax.set_title('{}\n(+-{:.3g})'.format(name, epsilon), fontsize=7)
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                _show(ax, image, title)
    fig.tight_layout()
    return _save(fig, path)
