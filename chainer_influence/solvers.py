"""Solvers for X = (H + damping I)^-1 V, V of shape (K, P): K right-hand sides at once.

Every solver has ``solve(curvature, V, damping=0.0) -> (K, P)`` (``curvature`` is a
:class:`~chainer_influence.curvature.Curvature`, Hessian or Gauss-Newton), fills
``self.diagnostics`` (a dict) for reports, and has ``default_damping(curvature)``, the damping used
when the user gives ``damping=None``. K-FAC and EK-FAC are in :mod:`chainer_influence.kfac`.
"""
import warnings

import numpy

import chainer

from chainer_influence import checks
from chainer_influence.curvature import DAMPING_FLOOR, DAMPING_FRACTION
from chainer_influence.curvature import NotPositiveDefiniteError  # NOQA (public here too)
from chainer_influence.curvature import lanczos_eigenvalues, random_batch_indices
from chainer_influence.progress import QUIET


class LiSSADivergenceError(ValueError):
    """The LiSSA recursion blew up: H + damping I is indefinite, or the scale is too small."""

LANCZOS_ITERATIONS = 30


def smallest_eigenvalue(curvature, start=None, seed=0, n_iter=LANCZOS_ITERATIONS):
    """Lanczos estimate of the smallest eigenvalue of H (full training set), ``n_iter`` HVPs.

    The estimate is an upper bound that approaches the true value (exactly it when P <= n_iter).
    ``start`` (P,): the first Lanczos direction, e.g. one of negative curvature; default random.
    """
    if start is None:
        rng = numpy.random.RandomState(seed)
        start = curvature.xp.asarray(rng.standard_normal(curvature.space.size))
    start = curvature.xp.asarray(start).astype(curvature.dtype)
    return float(lanczos_eigenvalues(curvature.hvp, start, n_iter)[0])


def suggested_damping(eigenvalue_min):
    """A damping that makes H + damping I positive definite with a margin: 1.5 (-lambda_min),
    rounded up to two significant digits; 0 when lambda_min > 0."""
    if eigenvalue_min >= 0:
        return 0.0
    value = 1.5 * -eigenvalue_min
    exponent = 10.0 ** (numpy.floor(numpy.log10(value)) - 1)
    return float(numpy.ceil(value / exponent) * exponent)


def _display(curvature):
    """The run's progress display (see :class:`~chainer_influence.progress.ProgressDisplay`)."""
    return getattr(curvature, 'progress', QUIET)


def iterative_default_damping(curvature):
    """damping=None for CG and LiSSA: 0 when H + weight_decay I is positive definite by
    construction (weight_decay > 0 and H PSD: the Gauss-Newton, or a Hessian equal to it, see
    ``Curvature.is_psd``), else ``DAMPING_FRACTION`` (0.1) x |trace(H)| / P, the trace from a
    Hutchinson estimate (one batched pass over the training set), at least ``DAMPING_FLOOR``."""
    if float(curvature.weight_decay_vector().min()) > 0 and curvature.is_psd():
        return 0.0
    mean = abs(curvature.trace_estimate()) / curvature.space.size
    return max(DAMPING_FRACTION * mean, DAMPING_FLOOR)


def column_norms(X):
    """Euclidean norm of each row of a (K, P) array, as a numpy (K,) float64 array."""
    norms = chainer.backend.get_array_module(X).linalg.norm(X, axis=1)
    return chainer.backend.CpuDevice().send(norms).astype(numpy.float64)


class ExactSolver(object):
    """Eigendecomposition H = Q diag(w) Q^T of the dense (P, P) Hessian; for small P (up to ~1e4).

    (H + damping I)^-1 V = ((V Q) / (w + damping)) Q^T. The decomposition is kept for later calls
    with the same curvature and parameter values (any damping). Raises
    :class:`NotPositiveDefiniteError` when the smallest eigenvalue of H + damping I is not above
    P * eps * (its largest |eigenvalue|).

    diagnostics: ``eigenvalue_min``, ``eigenvalue_max``, ``condition_number`` of H + damping I.
    """

    def __init__(self):
        self.diagnostics = {}
        self._key = None
        self._decomposition = None

    def solve(self, curvature, V, damping=0.0):
        """(H + damping I)^-1 V for V (K, P) -> (K, P)."""
        V = curvature.as_rows(V)
        damping = float(damping)
        w, Q = self.decompose(curvature)
        w = w + damping
        w_min, w_max = float(w[0]), float(w[-1])
        self.diagnostics = {'solver': 'exact', 'damping': damping, 'P': int(len(w)),
                            'eigenvalue_min': w_min, 'eigenvalue_max': w_max,
                            'condition_number': w_max / w_min if w_min > 0 else float('inf')}
        cutoff = len(w) * numpy.finfo(w.dtype).eps * max(abs(w_min), abs(w_max))
        if w_min <= cutoff:
            # eigenvalues below the cutoff are rounding noise in this dtype: lift them above it
            needed = damping - w_min + cutoff
            raise NotPositiveDefiniteError(
                'H + damping I is not positive definite: its smallest eigenvalue is {:.6g} '
                '(largest {:.6g}; values below {:.3g} are not distinguishable from 0 in {}) at '
                'damping={:g}. Use damping > {:.3g}, e.g. damping={:.3g}.'
                .format(w_min, w_max, cutoff, w.dtype, damping, needed,
                        needed + 1e-3 * abs(w_max)))
        return (V.dot(Q) / w).dot(Q.T)

    def default_damping(self, curvature):
        """damping=None: 0 when H + weight_decay I is comfortably positive definite (smallest
        eigenvalue above 1000 x the singularity cutoff of :meth:`solve`), else
        max(0, -eigenvalue_min) + ``DAMPING_FRACTION`` (0.1) x |trace of H without weight decay| / P
        (at least ``DAMPING_FLOOR``): positive definite, whatever H."""
        w, _ = self.decompose(curvature)
        w_min = float(w[0])
        cutoff = len(w) * numpy.finfo(w.dtype).eps * float(abs(w).max())
        if w_min > 1e3 * cutoff:
            return 0.0
        trace = float(w.sum()) - float(curvature.weight_decay_vector().sum())  # without decay
        mean = abs(trace) / len(w)
        return max(0.0, -w_min) + max(DAMPING_FRACTION * mean, DAMPING_FLOOR)

    def decompose(self, curvature):
        """(w (P,) ascending, Q (P, P)) with H = Q diag(w) Q^T; cached per parameter values."""
        values = curvature.space.values()
        key = self._key
        if key is None or key[0] is not curvature or not bool((key[1] == values).all()):
            self._decomposition = curvature.xp.linalg.eigh(curvature.dense_matrix())
            self._key = (curvature, values.copy())
        return self._decomposition


class CGSolver(object):
    """Conjugate gradient on full-training-set HVPs, one independent CG per column of V.

    All active columns share one batched HVP per iteration; a column stops when its relative
    residual ||v - A x|| / ||v|| (recursively updated) is <= ``tol``. Non-convergence after
    ``max_iter`` iterations warns and returns the iterate. Non-positive curvature p^T A p <= 0
    raises :class:`NotPositiveDefiniteError`.

    diagnostics: ``iterations`` (K,), ``relative_residual`` (K,), ``residual_trace`` (largest
    relative residual over the columns after each iteration), ``converged``.
    """

    def __init__(self, max_iter=100, tol=1e-6, progress=True):
        self.max_iter = checks.check_positive_int(max_iter, 'max_iter')
        self.tol = checks.check_non_negative(tol, 'tol')  # 0: run max_iter iterations
        self.progress = progress
        self.diagnostics = {}

    def solve(self, curvature, V, damping=0.0):
        """(H + damping I)^-1 V for V (K, P) -> (K, P)."""
        V = curvature.as_rows(V)
        xp = curvature.xp
        v_norms = column_norms(V)
        v_norms[v_norms == 0] = 1.0  # a zero column is solved by x = 0 at once
        X = xp.zeros_like(V)
        R = V.copy()
        D = R.copy()
        rs = (R * R).sum(axis=1)
        relative = column_norms(R) / v_norms
        iterations = numpy.zeros(len(V), dtype=int)
        trace = []
        with _display(curvature).phase('CG', self.max_iter, enabled=self.progress) as bar:
            for it in range(1, self.max_iter + 1):
                active = numpy.flatnonzero(relative > self.tol)
                if active.size == 0:
                    break
                a = xp.asarray(active)
                AD = curvature.hvp(D[a]) + damping * D[a]
                curv = (D[a] * AD).sum(axis=1)
                self._check_curvature(curvature, curv, D[a], active, it, damping)
                alpha = rs[a] / curv
                X[a] += alpha[:, None] * D[a]
                R[a] -= alpha[:, None] * AD
                rs_new = (R[a] * R[a]).sum(axis=1)
                D[a] = R[a] + (rs_new / rs[a])[:, None] * D[a]
                rs[a] = rs_new
                relative[active] = column_norms(R[a]) / v_norms[active]
                iterations[active] = it
                trace.append(float(relative.max()))
                bar.update()
        converged = bool((relative <= self.tol).all())
        self.diagnostics = {'solver': 'cg', 'damping': float(damping), 'tol': self.tol,
                            'max_iter': self.max_iter, 'iterations': iterations,
                            'relative_residual': relative, 'residual_trace': trace,
                            'converged': converged}
        if not converged:
            warnings.warn('CG did not converge in {} iterations: largest relative residual {:.3g} '
                          '(tol {:g}); returning the last iterate'.format(
                              self.max_iter, float(relative.max()), self.tol))
        return X

    def default_damping(self, curvature):
        return iterative_default_damping(curvature)

    def _check_curvature(self, curvature, curv, D, active, iteration, damping):
        curv = chainer.backend.CpuDevice().send(curv)
        bad = numpy.flatnonzero(curv <= 0)
        if bad.size:
            k = bad[0]
            # Lanczos from the offending direction: an estimate of lambda_min(H)
            estimate = smallest_eigenvalue(curvature, start=D[k])
            self.diagnostics = {'solver': 'cg', 'damping': float(damping),
                                'eigenvalue_min': estimate}
            raise NotPositiveDefiniteError(
                'CG met non-positive curvature p^T (H + damping I) p = {:.6g} (column {}, '
                'iteration {}): H + damping I is not positive definite at damping={:g}. The '
                'smallest eigenvalue of H is about {:.4g} ({} Lanczos iterations). Increase '
                'damping: it must exceed {:.3g}; use e.g. damping={:g}, or a positive semi-definite '
                'curvature (curvature=\'gauss-newton\').'.format(
                    curv[k], int(active[k]), iteration, damping, estimate, LANCZOS_ITERATIONS,
                    -estimate, suggested_damping(estimate)))


class LiSSASolver(object):
    """Stochastic Neumann-series solver (Agarwal et al. 2017; Koh & Liang 2017).

    For each column v: h_0 = v, h_j = v + h_{j-1} - (H_j + damping I) h_{j-1} / scale for
    j = 1..depth, where H_j is the Hessian on a random minibatch of ``batch_size`` training
    examples (numpy RandomState(seed): the same seed gives the same result); the estimate is
    h_depth / scale, averaged over ``repeat`` independent recursions.

    The series converges when every eigenvalue of H_j + damping I lies in (0, 2 scale).
    ``scale='auto'`` takes ``AUTO_SCALE_FACTOR`` (2) times a power-iteration estimate of the
    largest eigenvalue of H + damping I on the full training set: the factor leaves room for the
    estimate's underestimate and for minibatch Hessians above the full one. Since the error
    after ``depth`` steps is about (1 - lambda_min / scale)^depth, a smaller safe scale converges
    faster.

    When some column's ||h_j|| turns non-finite or exceeds 10 (j + 1) ||v||,
    :class:`LiSSADivergenceError` is raised (while every H_j + damping I has its eigenvalues in
    [0, 2 scale], ||h_j|| <= (j + 1) ||v||).

    diagnostics: ``scale``, ``top_eigenvalue`` (when estimated), ``norm_trace`` (repeat, depth):
    ||h_j / scale|| (Frobenius over the K columns) after each step.
    """

    AUTO_SCALE_FACTOR = 2.0
    POWER_ITERATIONS = 20

    def __init__(self, depth=5000, repeat=1, scale='auto', batch_size=32, seed=0, progress=True):
        if not (isinstance(scale, str) and scale == 'auto'):
            if isinstance(scale, str):
                raise ValueError("scale must be 'auto' or a finite positive number, got "
                                 "{!r}".format(scale))
            scale = checks.check_finite_positive(scale, 'scale')
        self.depth = checks.check_positive_int(depth, 'depth')
        self.repeat = checks.check_positive_int(repeat, 'repeat')
        self.scale = scale
        self.batch_size = checks.check_positive_int(batch_size, 'batch_size')
        self.seed = seed
        self.progress = progress
        self.diagnostics = {}

    def default_damping(self, curvature):
        return iterative_default_damping(curvature)

    def top_eigenvalue(self, curvature, damping):
        """Power-iteration estimate of the largest eigenvalue of H + damping I (full set)."""
        return curvature.top_eigenvalue(self.POWER_ITERATIONS, seed=self.seed) + damping

    def solve(self, curvature, V, damping=0.0):
        """(H + damping I)^-1 V for V (K, P) -> (K, P)."""
        V = curvature.as_rows(V)
        damping = float(damping)
        top = None
        if self.scale == 'auto':
            top = self.top_eigenvalue(curvature, damping)
            scale = self.AUTO_SCALE_FACTOR * top
        else:
            scale = float(self.scale)
        self.diagnostics = {'solver': 'lissa', 'damping': damping, 'scale': scale,
                            'top_eigenvalue': top, 'depth': self.depth, 'repeat': self.repeat,
                            'batch_size': self.batch_size, 'seed': self.seed}
        rng = numpy.random.RandomState(self.seed)
        trace = numpy.zeros((self.repeat, self.depth))
        self.diagnostics['norm_trace'] = trace
        total = curvature.xp.zeros_like(V)
        with _display(curvature).phase('LiSSA', self.repeat * self.depth,
                                      enabled=self.progress) as bar:
            for r in range(self.repeat):
                total += self._recursion(curvature, V, damping, scale, rng, trace[r], bar)
        return total / (self.repeat * scale)

    def _recursion(self, curvature, V, damping, scale, rng, trace, bar):
        """One recursion of ``depth`` steps; returns h_depth (K, P), fills ``trace``."""
        bound = 10.0 * column_norms(V)
        h = V.copy()
        for j in range(1, self.depth + 1):
            indices = random_batch_indices(rng, curvature.n_train, self.batch_size)
            h = V + h - (curvature.hvp(h, indices) + damping * h) / scale
            norms = column_norms(h)
            trace[j - 1] = numpy.sqrt((norms ** 2).sum()) / scale
            if not numpy.isfinite(norms).all() or (norms > bound * (j + 1)).any():
                self._diverged(curvature, damping, scale, j, norms, bound * (j + 1))
            bar.update()
        return h

    def _diverged(self, curvature, damping, scale, step, norms, bounds):
        """Raise :class:`LiSSADivergenceError` naming the cause: indefinite H + damping I, a
        scale below its largest eigenvalue, or minibatch Hessians far from the full one."""
        top = self.diagnostics['top_eigenvalue']
        if top is None:
            top = self.top_eigenvalue(curvature, damping)
            self.diagnostics['top_eigenvalue'] = top
        lowest = smallest_eigenvalue(curvature, seed=self.seed)
        self.diagnostics.update(diverged_at=step, eigenvalue_min=lowest)
        what = 'LiSSA diverged at step {} (||h|| = {:.3g}, bound {:.3g}) with scale={:.4g}'.format(
            step, float(numpy.max(norms)), float(bounds.max()), scale)
        if lowest + damping <= 0:
            raise LiSSADivergenceError(
                '{}: H is indefinite (its smallest eigenvalue is about {:.4g}, {} Lanczos '
                'iterations), so H + damping I is not positive definite at damping={:g} and the '
                'series diverges at any scale. Use damping > {:.3g}, e.g. damping={:g}, or a '
                'positive semi-definite curvature (curvature=\'gauss-newton\').'.format(
                    what, lowest, LANCZOS_ITERATIONS, damping, -lowest,
                    suggested_damping(lowest)))
        if scale <= top:
            raise LiSSADivergenceError(
                '{}: the scale must exceed the largest eigenvalue of H + damping I (damping={:g}),'
                ' estimated at {:.4g} by power iteration. Use scale >= {:.4g} (or '
                'scale=\'auto\').'.format(what, damping, top, self.AUTO_SCALE_FACTOR * top))
        raise LiSSADivergenceError(
            '{}: H + damping I is positive definite (eigenvalues about {:.4g} to {:.4g}) but the '
            'Hessians of minibatches of batch_size={} examples are not within (0, 2 scale). Use '
            'a larger batch_size, more damping or a larger scale.'.format(
                what, lowest + damping, top, self.batch_size))
