"""The most helpful and most harmful training examples per test point.

Scores are I_up,loss values: negative = helpful (up-weighting the training example lowers the
test loss), positive = harmful.
"""
import numpy

from chainer_influence.devices import to_host


def _smallest(scores, k):
    """Indices (M, k) of each row's k smallest scores, smallest first, ties by lower index."""
    m, n = scores.shape
    indices = numpy.empty((m, k), dtype=numpy.int64)
    if k == 0:
        return indices
    kth = numpy.partition(scores, k - 1, axis=1)[:, k - 1]
    for row, (values, threshold) in enumerate(zip(scores, kth)):
        candidates = numpy.flatnonzero(values <= threshold)  # k or more when tied at threshold
        order = numpy.lexsort((candidates, values[candidates]))
        indices[row] = candidates[order[:k]]
    return indices


def top_influential(scores, top_k):
    """Rank training examples by influence for each test point.

    Args:
        scores: (M, N) influence matrix (numpy or cupy), or (N,) for one test point.
        top_k (int): how many to keep; k = min(top_k, N).

    Returns:
        dict of numpy arrays, each (M, k) ((k,) for 1-D input):
        ``helpful`` (int64 indices of the most negative scores, most negative first),
        ``helpful_scores``, ``harmful`` (indices of the most positive scores, largest first),
        ``harmful_scores``. Equal scores are ordered by lower training index.
    """
    scores = to_host(scores)
    if scores.ndim not in (1, 2):
        raise ValueError('scores must be (N,) or (M, N), got shape {}'.format(scores.shape))
    if numpy.isnan(scores).any():
        raise ValueError('scores contain NaN')
    matrix = scores.reshape(-1, scores.shape[-1])
    k = max(0, min(int(top_k), matrix.shape[1]))
    helpful = _smallest(matrix, k)
    harmful = _smallest(-matrix, k)
    result = {
        'helpful': helpful,
        'helpful_scores': numpy.take_along_axis(matrix, helpful, axis=1),
        'harmful': harmful,
        'harmful_scores': numpy.take_along_axis(matrix, harmful, axis=1),
    }
    if scores.ndim == 1:
        result = {name: value[0] for name, value in result.items()}
    return result
