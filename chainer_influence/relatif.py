"""RelatIF (Barshan et al. 2020): influence divided by sqrt(self-influence) per training example.

``normalize='relatif'`` in ``InfluenceFunctions.influence`` and ``InfluenceExtension`` divides
column i of the (M, N) scores by ``sqrt(self_influence_i)`` (:func:`relatif_norms`); signs are
unchanged (negative = helpful).
"""
import numpy

from chainer_influence import solvers as solvers_module

RELATIF_FLOOR = 1e-12        # self-influence floor for RelatIF, relative to the largest
NORMALIZATIONS = (None, 'relatif')


def check_normalize(normalize):
    """Raise ``ValueError`` unless ``normalize`` is one of :data:`NORMALIZATIONS`."""
    if normalize not in NORMALIZATIONS:
        raise ValueError('normalize must be None or \'relatif\', got {!r}'.format(normalize))


def relatif_norms(self_influence):
    """(N,) sqrt(self_influence), the RelatIF divisors (Barshan et al. 2020).

    Values below ``RELATIF_FLOOR`` times the largest (rounding noise around an example with a
    zero gradient, whose influence is 0 anyway) are floored there; a value below minus 1e-6 times
    the largest means H + damping I is not positive definite and raises.
    """
    values = numpy.asarray(self_influence, dtype=numpy.float64)
    largest = max(float(values.max()), 0.0)
    worst = int(values.argmin())
    if values[worst] < -1e-6 * largest or (largest == 0.0 and values[worst] < 0):
        raise solvers_module.NotPositiveDefiniteError(
            'RelatIF divides by sqrt(self-influence), but training example {} has self-influence '
            '{:.6g} < 0 (largest {:.6g}): H + damping I is not positive definite (or the solver '
            'did not converge). Add damping or use curvature=\'gauss-newton\'.'.format(
                worst, values[worst], largest))
    floor = max(RELATIF_FLOOR * largest, numpy.finfo(numpy.float64).tiny)
    return numpy.sqrt(numpy.maximum(values, floor))
