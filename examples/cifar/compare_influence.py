"""Side-by-side comparison of two influence computations over the same test points.

Typical use: last-layer influence against all-parameter influence of one trained network. Per
test point it gives the overlap of the top-k helpful sets and of the top-k harmful sets (shared
examples / k) and the Spearman rank correlation of the two full rows of scores over the
training set; the means over the test points summarise it.
"""
import json
import os

import numpy
from scipy import stats

import chainer_influence as ci


def _overlap(a, b):
    """The training indices in both rankings (in ``a``'s order) and their share of the list."""
    in_b = set(b.tolist())
    shared = [int(j) for j in a if j in in_b]
    return shared, len(shared) / float(max(len(a), 1))


def _spearman(a, b):
    """Spearman's rho of two score rows; None when one row is constant (rho undefined)."""
    if numpy.ptp(a) == 0 or numpy.ptp(b) == 0:
        return None
    return float(stats.spearmanr(a, b)[0])


def _mean(values):
    values = [v for v in values if v is not None]
    return float(numpy.mean(values)) if values else None


def compare_reports(reports, top_k=None):
    """Compare two :class:`~chainer_influence.InfluenceReport` objects on the same test points.

    Args:
        reports (dict): exactly two ``{name: report}`` entries, e.g. ``{'last': r1, 'all': r2}``.
        top_k (int or None): the size of the compared sets; None: the reports' ``top_k``.

    Returns:
        a JSON-ready dict: ``names``, ``top_k``, ``n_train``, ``test_points`` (per test point:
        ``test_index``, ``helpful_overlap``, ``harmful_overlap`` in [0, 1], the ``helpful_shared``
        and ``harmful_shared`` training indices, ``spearman``), ``mean`` (of the three measures)
        and ``settings`` (each report's settings).
    """
    (name_a, a), (name_b, b) = reports.items()
    if a.scores.shape != b.scores.shape or list(a.test_indices) != list(b.test_indices):
        raise ValueError('the reports must score the same test points against the same training '
                         'set: shapes {} and {}'.format(a.scores.shape, b.scores.shape))
    k = a.top_k if top_k is None else int(top_k)
    ranked_a, ranked_b = ci.top_influential(a.scores, k), ci.top_influential(b.scores, k)
    points = []
    for m, test_index in enumerate(a.test_indices):
        point = {'test_index': int(test_index)}
        for kind in ('helpful', 'harmful'):
            shared, share = _overlap(ranked_a[kind][m], ranked_b[kind][m])
            point[kind + '_overlap'] = share
            point[kind + '_shared'] = shared
        point['spearman'] = _spearman(a.scores[m], b.scores[m])
        points.append(point)
    measures = ('helpful_overlap', 'harmful_overlap', 'spearman')
    return {
        'names': [name_a, name_b],
        'top_k': k,
        'n_train': int(a.scores.shape[1]),
        'test_points': points,
        'mean': {key: _mean([p[key] for p in points]) for key in measures},
        'settings': {name: r.to_dict()['settings'] for name, r in reports.items()},
    }


def _fmt(value):
    return '   n/a' if value is None else '{:6.3f}'.format(value)


def summary(comparison):
    """A few lines of text: one row per test point and the means."""
    name_a, name_b = comparison['names']
    lines = ['influence {} vs {} (top {} of {} training examples)'.format(
                 name_a, name_b, comparison['top_k'], comparison['n_train']),
             '  test  helpful  harmful  spearman']
    rows = comparison['test_points'] + [dict(comparison['mean'], test_index='mean')]
    for p in rows:
        lines.append('{:>6}  {}   {}   {}'.format(p['test_index'], _fmt(p['helpful_overlap']),
                                                 _fmt(p['harmful_overlap']), _fmt(p['spearman'])))
    return '\n'.join(lines)


def write_comparison(comparison, path):
    """Write the comparison as indented JSON (creating the folder); returns ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(comparison, f, indent=1)
    return path
