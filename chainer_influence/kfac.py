"""K-FAC and EK-FAC inverse-curvature products (Martens & Grosse 2015; Grosse & Martens 2016;
George et al. 2018), as used for influence by Grosse et al. 2023 (Kronfluence).

They approximate the Gauss-Newton / Fisher matrix of the training objective (whatever the
``curvature`` object's ``kind`` is: they need the loss's output-Hessian protocol,
:class:`~chainer_influence.losses.OutputLoss`) by one block per layer:

* Linear (any ``n_batch_axes``), Convolution2D and Deconvolution2D (one group) and EmbedID: the
  weight, seen as a (rows, cols) matrix whose per-example gradient is sum_t u_t w_t^T (see
  ``outer_operands`` in :mod:`~chainer_influence.gradient_rules`; a Linear or Convolution2D bias
  is a last column with w = 1), gets G ~= L (x) R with L = mean_i (1/T) sum_t u u^T and
  R = mean_i sum_t w w^T (Kronecker product in the row-major layout of the weight);
* every other tracked parameter (FixedBatchNormalization's gamma and beta, Bias, Scale, a
  Deconvolution2D bias, a grouped convolution, ...) gets the diagonal mean_i g_i^2 of its
  per-example gradients.

The statistics come from passes over the training set that back-propagate pseudo output-gradients
g through the outputs f(x): ``fisher='sampled'`` one g per example, drawn from the model's
predictive distribution (numpy RandomState(seed): deterministic; E[g g^T] = H_out), and
``fisher='exact'`` the R columns of a square root of H_out (R times the cost; the Kronecker
approximation of the Gauss-Newton matrix itself). Factors are accumulated in float64.

With L = Q_L diag(a) Q_L^T and R = Q_R diag(b) Q_R^T, K-FAC's eigenvalues are a_i b_j in the basis
Q_L (x) Q_R; EK-FAC replaces them by mean_i (Q_L^T G_i Q_R)^2, the exact second moments of the
per-example gradients in that basis (a second pass). Solves rotate into the eigenbasis, divide by
eigenvalue + weight_decay + damping and rotate back: no Hessian-vector products, and the cost of
many right-hand sides is that of a few matrix products.

This module fits the blocks from those statistics and solves with them; the statistics themselves
(the factor-collecting hook and the passes) are in :mod:`~chainer_influence.kfac_factors`.
"""
import json
import time

import numpy

import chainer

from chainer_influence.curvature import DAMPING_FLOOR, DAMPING_FRACTION
from chainer_influence.curvature import NotPositiveDefiniteError
from chainer_influence.kfac_factors import FISHER_KINDS, Block, KroneckerFactorHook
from chainer_influence.kfac_factors import pseudo_gradient_passes, symmetric_eigh
from chainer_influence.kfac_factors import rotate, rotate_back
from chainer_influence.losses import require_output_loss


class KFACSolver(object):
    """(G + (weight_decay + damping) I)^-1 V with G the K-FAC approximation of the Gauss-Newton /
    Fisher matrix (see the module docstring); ``solve(curvature, V, damping)`` like the others.

    The factors are fitted on first use per curvature object and parameter values (one pass over
    the training set; a second for EK-FAC) and reused for any test set and damping.
    ``fisher='exact'`` costs C times the backward passes of 'sampled' (C outputs).

    Other methods: :meth:`quadratic_form` and :meth:`quadratic_form_hook` (self-influence
    without solves), :meth:`default_damping`,
    :meth:`factors_to_arrays` / :meth:`factors_from_arrays` (the on-disk cache).

    diagnostics: ``fisher``, ``damping``, ``eigenvalue_min`` / ``eigenvalue_max`` of the
    approximation + weight_decay + damping, ``mean_eigenvalue`` (of the approximation alone),
    ``n_kronecker_blocks``, ``n_diagonal_params``, ``factor_bytes``, ``fit_seconds``.
    """

    kind = 'kfac'

    def __init__(self, fisher='sampled', seed=0, progress=True):
        if fisher not in FISHER_KINDS:
            raise ValueError('fisher must be one of {}, got {!r}'.format(FISHER_KINDS, fisher))
        self.fisher = fisher
        self.seed = int(seed)
        self.progress = progress
        self.diagnostics = {}
        self._key = None
        self._blocks = None       # [(Block, Q_L or None, Q_R or None, eigenvalues (rows, cols))]
        self._fit_seconds = 0.0

    # ---- public API ----------------------------------------------------------------------
    def fit(self, curvature):
        """Fit the factors unless already fitted for this curvature and parameter values."""
        values = curvature.space.values()
        key = self._key
        if key is None or key[0] is not curvature or not bool((key[1] == values).all()):
            require_output_loss(curvature.loss_fn, type(self).__name__)
            start = time.time()
            self._blocks = self._fit(curvature)
            self._fit_seconds = time.time() - start
            self._key = (curvature, values.copy())
        return self

    def solve(self, curvature, V, damping=0.0):
        """(G + (weight_decay + damping) I)^-1 V for V (K, P) -> (K, P)."""
        V = curvature.as_rows(V)
        denominators = self._denominators(curvature, damping)
        parts = curvature.space.unflatten(V)
        shapes = dict(zip(curvature.space.names, curvature.space.shapes))
        out = {}
        for (block, QL, QR, _), d in zip(self._blocks, denominators):
            M = rotate(block.gather(parts, len(V)).astype(numpy.float64), QL, QR)
            M = rotate_back(M / d, QL, QR)
            block.scatter(M, shapes, out)
        return curvature.space.flatten(out, lead_shape=(len(V),)).astype(V.dtype, copy=False)

    def quadratic_form(self, curvature, G, damping=0.0):
        """(B,) g_b^T (G + (weight_decay + damping) I)^-1 g_b for the rows of G (B, P): rotate,
        scale, sum the squares (half a solve; self-influence in one pass)."""
        G = curvature.as_rows(G)
        denominators = self._denominators(curvature, damping)
        parts = curvature.space.unflatten(G)
        total = curvature.xp.zeros(len(G), dtype=numpy.float64)
        for (block, QL, QR, _), d in zip(self._blocks, denominators):
            M = rotate(block.gather(parts, len(G)).astype(numpy.float64), QL, QR)
            total += (M * M / d).sum(axis=(1, 2))
        return total

    def quadratic_form_hook(self, curvature, damping=0.0):
        """A hook for self-influence at the cost of one backward pass: ``hook.backward(losses)``
        for per-example losses (B,) sets ``hook.values`` (B,) float64 to :meth:`quadratic_form`
        of their per-example gradients, without building them (see
        :class:`KroneckerFactorHook`, mode 'quadratic')."""
        denominators = self._denominators(curvature, damping)
        return KroneckerFactorHook(curvature.space, 'quadratic', self._blocks, denominators)

    def eigenvalues(self, curvature):
        """All P eigenvalues of the approximation (without weight decay or damping), flat."""
        self.fit(curvature)
        return curvature.xp.concatenate([e.ravel() for _, _, _, e in self._blocks])

    def default_damping(self, curvature):
        """damping=None: ``DAMPING_FRACTION`` (0.1) x the mean eigenvalue of the approximation
        (its trace / P, weight decay excluded; Kronfluence's rule), at least ``DAMPING_FLOOR``."""
        return max(DAMPING_FRACTION * float(self.eigenvalues(curvature).mean()), DAMPING_FLOOR)

    def factors_to_arrays(self):
        """The fitted factors as a dict of host arrays (``structure``: JSON of the blocks)."""
        arrays = {'structure': numpy.array(json.dumps(
            {'kind': self.kind, 'fisher': self.fisher, 'seed': self.seed,
             'blocks': [block.describe() for block, _, _, _ in self._blocks]}))}
        for i, (block, QL, QR, eigenvalues) in enumerate(self._blocks):
            for key, a in (('QL', QL), ('QR', QR), ('eigenvalues', eigenvalues)):
                if a is not None:
                    arrays['{}_{}'.format(key, i)] = chainer.backend.CpuDevice().send(a)
        return arrays

    def factors_from_arrays(self, curvature, arrays):
        """Install factors saved by :meth:`factors_to_arrays` for ``curvature``'s current
        parameter values (the caller vouches that they were fitted at these values)."""
        structure = json.loads(str(arrays['structure']))
        if (structure['kind'], structure['fisher'], structure['seed']) != (
                self.kind, self.fisher, self.seed):
            raise ValueError('saved factors are for {}; this solver is {} fisher={} seed={}'
                             .format(structure, self.kind, self.fisher, self.seed))
        xp = curvature.xp
        blocks = []
        for i, d in enumerate(structure['blocks']):
            block = Block(d['names'], d['rows'], d['kronecker'], d['activation_left'],
                          d['left_diagonal'])
            QL, QR = (arrays.get('{}_{}'.format(k, i)) for k in ('QL', 'QR'))
            blocks.append((block, None if QL is None else xp.asarray(QL),
                           None if QR is None else xp.asarray(QR),
                           xp.asarray(arrays['eigenvalues_{}'.format(i)])))
        self._blocks = blocks
        self._key = (curvature, curvature.space.values().copy())
        self._fit_seconds = 0.0
        return self

    # ---- internals -----------------------------------------------------------------------
    def _denominators(self, curvature, damping):
        """Per block, eigenvalues + weight decay + damping (rows, cols); fit, check positive
        definiteness, fill diagnostics. The weight decay (a float, or per parameter) enters as
        the diagonal of diag(weight_decay) in the block's eigenbasis: exact when the rate is the
        same over the block (always for a float)."""
        self.fit(curvature)
        damping = float(damping)
        decay = curvature.space.unflatten(curvature.weight_decay_vector()[None])
        denominators = []
        for block, QL, QR, eigenvalues in self._blocks:
            D = block.gather(decay, 1)[0].astype(numpy.float64)
            if QL is not None:
                D = (QL * QL).T.dot(D)
            if QR is not None:
                D = D.dot(QR * QR)
            denominators.append(eigenvalues + D + damping)
        eigenvalues = self.eigenvalues(curvature)
        low = min(float(d.min()) for d in denominators)
        high = max(float(d.max()) for d in denominators)
        self.diagnostics = {
            'solver': self.kind, 'fisher': self.fisher, 'damping': damping,
            'eigenvalue_min': low, 'eigenvalue_max': high,
            'mean_eigenvalue': float(eigenvalues.mean()),
            'n_kronecker_blocks': sum(b.kronecker for b, _, _, _ in self._blocks),
            'n_diagonal_params': sum(len(b.names) for b, _, _, _ in self._blocks
                                     if not b.kronecker),
            'factor_bytes': sum(sum(int(a.nbytes) for a in (QL, QR, e) if a is not None)
                                for _, QL, QR, e in self._blocks),
            'fit_seconds': self._fit_seconds}
        if not low > 0:
            raise NotPositiveDefiniteError(
                '{} approximation + weight_decay + damping is singular: its smallest eigenvalue '
                'is {:.3g} at damping={:g}. Use damping > 0 (damping=None picks {:.3g}).'.format(
                    type(self).__name__, low, damping, self.default_damping(curvature)))
        return denominators

    def _fit(self, curvature):
        space = curvature.space
        hook = KroneckerFactorHook(space)
        pseudo_gradient_passes(curvature, hook, self.fisher, self.seed, self.progress,
                               '{} factors'.format(self.kind.upper()))
        n = float(curvature.n_train)
        blocks = []
        for name, block in hook.blocks.items():
            a, QL = ((hook.left[name] / n, None) if block.left_diagonal
                     else symmetric_eigh(hook.left[name] / n))
            b, QR = symmetric_eigh(hook.right[name] / n)
            blocks.append((block, QL, QR, a[:, None] * b[None, :]))
        folded = set(hook.folded_bias) | set(hook.blocks)
        xp = curvature.xp
        for name, size in zip(space.names, space.sizes):
            if name not in folded:  # never reached: zero curvature
                diag = hook.diagonal.get(name, xp.zeros(size, dtype=numpy.float64)) / n
                blocks.append((Block([name], 1, False), None, None, diag.reshape(1, size)))
        return self._correct(curvature, blocks)

    def _correct(self, curvature, blocks):
        """K-FAC keeps the Kronecker eigenvalues; EK-FAC overrides this."""
        return blocks


class EKFACSolver(KFACSolver):
    """K-FAC with eigenvalue correction (George et al. 2018): a second pass over the training set
    projects the per-example pseudo-gradients into the Kronecker eigenbasis and takes their
    mean squares as the eigenvalues (same ``fisher`` kind and seed, hence the same draws).
    Same interface and diagnostics as :class:`KFACSolver`."""

    kind = 'ekfac'

    def _correct(self, curvature, blocks):
        hook = KroneckerFactorHook(curvature.space, 'eigen', blocks)
        pseudo_gradient_passes(curvature, hook, self.fisher, self.seed, self.progress,
                               'EK-FAC eigenvalues')
        n = float(curvature.n_train)
        xp = curvature.xp
        return [(block, QL, QR, (hook.eigen.get(block.names[0], xp.zeros_like(e)) / n)
                 if block.kronecker else e) for block, QL, QR, e in blocks]
