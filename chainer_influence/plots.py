"""Matplotlib figures (Agg, no display): the only module of the package that imports matplotlib.

Figures are built on ``matplotlib.figure.Figure`` with an Agg canvas, so importing this module
neither needs a display nor changes the pyplot backend of the caller. Each function writes one PNG
(creating parent folders) and returns its path.
"""
import os

import numpy

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from chainer_influence.rankings import to_host


def _figure(width, height):
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path, dpi=100):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


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


def _label_text(report, label):
    name = report.label_name(label)
    return str(int(label)) if name is None else name


_TITLE_COLOURS = {'helpful': 'tab:green', 'harmful': 'tab:red'}


def _show(ax, image, title, colour='black'):
    ax.imshow(image, cmap='gray', vmin=0., vmax=1., interpolation='nearest')
    ax.set_title(title, fontsize=7, color=colour)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_top_influential(report, test_images, train_images, path, n_show=None,
                         value_range=(0., 1.)):
    """Grid: per test point (row) its image, then its top-k helpful and top-k harmful examples.

    Args:
        report (InfluenceReport): scores and labels; its ``top_k`` sets k.
        test_images, train_images: arrays or datasets of tuples (element 0 is the input),
            indexed by ``report.test_indices`` and by training index.
        path (str): the PNG to write.
        n_show (int or None): show only the first n_show test points.
        value_range: the pixel range of the inputs (``(0, scale)`` of the loaders).

    Titles give labels (class names when the report has them) and influence values
    (negative = helpful, positive = harmful).
    """
    ranked = report.rankings()
    rows = len(report.test_indices) if n_show is None else min(n_show, len(report.test_indices))
    k = ranked['helpful'].shape[1]
    cols = 1 + 2 * k
    fig = _figure(1.3 * cols, 1.9 * max(rows, 1))
    for r in range(rows):
        title = 'test {}\nlabel: {}'.format(
            report.test_indices[r], _label_text(report, report.test_labels[r]))
        if report.predicted_labels is not None:
            title += '\npred: {}'.format(_label_text(report, report.predicted_labels[r]))
        ax = fig.add_subplot(rows, cols, r * cols + 1)
        _show(ax, as_image(_example(test_images, report.test_indices[r]), value_range), title)
        for side, kind in enumerate(('helpful', 'harmful')):
            for rank, j in enumerate(ranked[kind][r]):
                title = '{} #{}\n{}\n{:.3g}'.format(
                    kind, rank + 1, _label_text(report, report.train_labels[j]),
                    report.scores[r, j])
                ax = fig.add_subplot(rows, cols, r * cols + 2 + side * k + rank)
                _show(ax, as_image(_example(train_images, j), value_range), title,
                      _TITLE_COLOURS[kind])
    fig.tight_layout()
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
