"""Curvature-vector products of the training objective by double backprop.

The objective is R(theta) = (1/N) sum_i L(z_i, theta) + (weight_decay / 2) ||theta||^2 over the
tracked parameters. ``H`` below is its Hessian (``curvature='hessian'``) or its generalised
Gauss-Newton matrix (``curvature='gauss-newton'``)
G = (1/N) sum_i J_i^T H_out,i J_i + weight_decay I, J_i = d f(x_i) / d theta (C, P) and H_out,i the
Hessian of the loss with respect to the outputs f(x_i) (see
:class:`~chainer_influence.losses.OutputLoss`).
G is positive semi-definite whenever the loss is convex in the outputs, and equals the Hessian when
the outputs are affine in the tracked parameters (e.g. the last layer). Damping is the solvers'
business, not added here.
"""
import numpy

import chainer
import chainer.functions as F

from chainer_influence import checks
from chainer_influence.batches import dataset_length, get_batch, iterate_batches
from chainer_influence.distributed import Shard, digest
from chainer_influence.hooks import exclusive_backward
from chainer_influence.losses import require_output_loss
from chainer_influence.parameters import ParameterSpace
from chainer_influence.progress import ProgressDisplay

CURVATURES = ('hessian', 'gauss-newton')
PROBE_EXAMPLES = 64      # examples of the convexity probe (:meth:`Curvature.is_psd`)
DAMPING_FRACTION = 0.1   # default damping rules: this fraction of the mean eigenvalue ...
DAMPING_FLOOR = 1e-8     # ... and at least this (an all-zero curvature)


class NotPositiveDefiniteError(ValueError):
    """H + damping I is not positive definite; the message says how much damping would help."""


def random_batch_indices(random_state, n, batch_size):
    """``min(batch_size, n)`` distinct indices in [0, n), sorted, drawn from a numpy RandomState."""
    return numpy.sort(random_state.choice(n, min(batch_size, n), replace=False))


class Curvature(object):
    """Hessian or Gauss-Newton of R(theta) = (1/N) sum_i L(z_i) + weight_decay/2 ||theta||^2 over
    the tracked params (see the module docstring); ``H`` below is whichever ``curvature`` names.

    Args:
        model (chainer.Link): the trained model (an ``L.Classifier`` is unwrapped).
        loss_fn: ``loss_fn(model, *batch)`` -> per-example losses, a Variable of shape (B,),
            twice differentiable.
        train: a Chainer dataset of tuples, or a tuple of arrays (x, t, ...).
        params (list of str or None): tracked parameter names; None tracks all.
        weight_decay (float or dict): as in ``chainer.optimizer_hooks.WeightDecay(rate)``; a dict
            ``{name: rate}`` gives each parameter its own rate (0 for names it lacks). Kept as
            ``self.weight_decay``: a float, or a (P,) vector for a dict.
        batch_size (int): examples per forward pass when summing over the training set.
        device: Chainer device spec the batches are sent to (see ``get_batch``).
        curvature (str): ``'hessian'`` or ``'gauss-newton'`` (needs a loss with the output-Hessian
            protocol, :class:`~chainer_influence.losses.OutputLoss`).
        comm: a ChainerMN communicator or None. With one, ``train`` is the full training set on
            every rank; each rank reads only its shard (``self.shard``) and every pass over the
            data is summed across ranks, so every rank gets the same full-set products.

    Nothing here keeps a graph alive between calls, and the parameters' ``.grad`` is never touched.
    ``progress`` (a :class:`~chainer_influence.progress.ProgressDisplay`; on a terminal by default;
    ``InfluenceFunctions`` sets its own) is the display that the dense Hessian, power iterations
    and the solvers draw their phases on.
    """

    progress = ProgressDisplay()

    def __init__(self, model, loss_fn, train, params=None, weight_decay=0.0, batch_size=256,
                 device=None, curvature='hessian', comm=None):
        if curvature not in CURVATURES:
            raise ValueError('curvature must be one of {}, got {!r}'.format(CURVATURES, curvature))
        if curvature == 'gauss-newton':
            require_output_loss(loss_fn, "curvature='gauss-newton'")
        self.kind = curvature
        self.model = model
        self.loss_fn = loss_fn
        self.train = train
        self.space = ParameterSpace(model, params)
        self.n_train = dataset_length(train, 'training set')
        self.weight_decay = self.space.per_parameter(weight_decay)
        self.batch_size = checks.check_positive_int(batch_size, 'batch_size')
        self.device = device
        self.shard = Shard(self.n_train, comm)
        if self.shard.distributed:
            self.shard.check_same((self.n_train, digest(self.space.values())),
                                  'the training set sizes or the parameter values')

    @property
    def xp(self):
        return self.space.xp

    @property
    def dtype(self):
        return self.space.params[0].dtype

    def weight_decay_vector(self):
        """The weight-decay rate of every tracked entry, a (P,) array on the model's device."""
        return self.xp.broadcast_to(self.xp.asarray(self.weight_decay, dtype=self.dtype),
                                    (self.space.size,))

    def as_rows(self, V):
        """V as a (K, P) array on the model's device; a (P,) vector becomes K = 1."""
        V = self.xp.asarray(V)
        if V.ndim == 1:
            V = V[None]
        if V.ndim != 2 or V.shape[1] != self.space.size:
            raise ValueError('expected V of shape (K, P={}), got {}'.format(
                self.space.size, V.shape))
        return V

    def hvp(self, V, indices=None):
        """H V for V of shape (K, P) (or (P,)); returns the same shape, on the model's device.

        ``indices=None``: the loss term is the exact mean over all N training examples, summed in
        batches of ``batch_size`` weighted by (batch length / N). Otherwise it is the mean over the
        examples at ``indices`` (a minibatch estimate). The weight-decay term is always added.
        """
        squeeze = numpy.ndim(V) == 1
        V = self.as_rows(V)
        out = self.weight_decay * V + self._mean_over_data(self._batch_hvp, V, indices)
        return out[0] if squeeze else out

    def _mean_over_data(self, batch_product, V, indices=None):
        """Mean of ``batch_product(batch, V)`` (a batch mean, (K, P)) over the training set, or
        over the examples at ``indices``, with this rank's shard of them summed across ranks."""
        out = self.xp.zeros(V.shape, dtype=V.dtype)
        if indices is None:
            for begin, end, batch in self._local_batches():
                out += (end - begin) / float(self.n_train) * batch_product(batch, V)
        else:
            local = self.shard.local(indices) if self.shard.distributed else indices
            if len(local):
                batch = get_batch(self.train, local, self.device)
                out += len(local) / float(len(indices)) * batch_product(batch, V)
        return self.shard.allreduce_sum(out)

    def _local_batches(self):
        """``(begin, end, batch)`` over this rank's shard of the training set."""
        return iterate_batches(self.train, self.batch_size, self.device, self.shard.begin,
                               self.shard.end)

    def _batch_hvp(self, batch, V):
        if self.kind == 'gauss-newton':
            return self._batch_ggn_vp(batch, V)
        return self._batch_hessian_vp(batch, V)

    def _batch_hessian_vp(self, batch, V):
        """Hessian of the mean loss over one batch times each row of V: (K, P).

        One first-order graph (built with double backprop) serves all K rows; it is dropped when
        this method returns.
        """
        params = self.space.params
        with chainer.using_config('train', False), chainer.using_config('enable_backprop', True), \
                exclusive_backward():
            loss = F.mean(self.loss_fn(self.model, *batch))
            grads = chainer.grad([loss], params, enable_double_backprop=True)
            # Gradients that are constant in theta (None, or without a creator) add no curvature.
            linked = [i for i, g in enumerate(grads) if g is not None and g.creator is not None]
            rows = self.xp.zeros(V.shape, dtype=V.dtype)
            for k in range(V.shape[0] if linked else 0):
                v = self.space.unflatten(V[k].astype(self.dtype, copy=False))
                hv = chainer.grad(
                    [grads[i] for i in linked], params,
                    grad_outputs=[chainer.Variable(v[self.space.names[i]]) for i in linked])
                rows[k] = self.space.flatten(
                    [self.xp.zeros(p.shape, p.dtype) if h is None else h.array
                     for h, p in zip(hv, params)])
        return rows

    def _batch_ggn_vp(self, batch, V):
        """Gauss-Newton of the mean loss over one batch times each row of V: (K, P).

        Per row v: J v = d/du [(J^T u) . v] by double backprop (u (B, C) a dummy variable; Chainer
        has no forward mode), then J^T (H_out J v) / B by a plain backward of the outputs.
        """
        params, names = self.space.params, self.space.names
        rows = self.xp.zeros(V.shape, dtype=V.dtype)
        with chainer.using_config('train', False), chainer.using_config('enable_backprop', True), \
                exclusive_backward():
            y = self.loss_fn.outputs(self.model, *batch)
            if y.ndim != 2:
                raise ValueError('loss_fn.outputs must return (B, C) outputs, got shape {}'
                                 .format(y.shape))
            u = chainer.Variable(self.xp.zeros(y.shape, dtype=y.dtype))
            jt_u = chainer.grad([F.sum(y * u)], params, enable_double_backprop=True)
            linked = [i for i, g in enumerate(jt_u) if g is not None]
            for k in range(V.shape[0] if linked else 0):
                v = self.space.unflatten(V[k].astype(self.dtype, copy=False))
                jv, = chainer.grad([jt_u[i] for i in linked], [u],
                                   grad_outputs=[chainer.Variable(v[names[i]]) for i in linked])
                if jv is None:
                    continue
                w = self.loss_fn.output_hessian_product(y.array, jv.array, *batch) / len(y)
                gv = chainer.grad([y], params, grad_outputs=[chainer.Variable(w)])
                rows[k] = self.space.flatten(
                    [self.xp.zeros(p.shape, p.dtype) if g is None else g.array
                     for g, p in zip(gv, params)])
        return rows

    def outputs_affine_on(self, indices):
        """Whether the outputs are affine in the tracked parameters on the examples at ``indices``,
        i.e. the Hessian equals the Gauss-Newton there: the second derivative of u . f(x) vanishes
        in a random direction (exactly: no graph, or an exactly zero product). Needs the
        output-Hessian protocol."""
        require_output_loss(self.loss_fn, 'the convexity probe')
        batch = get_batch(self.train, indices, self.device)
        params = self.space.params
        rng = numpy.random.RandomState(0)
        with chainer.using_config('train', False), chainer.using_config('enable_backprop', True), \
                exclusive_backward():
            y = self.loss_fn.outputs(self.model, *batch)
            u = self.xp.asarray(rng.standard_normal(y.shape).astype(y.dtype))
            grads = chainer.grad([F.sum(y * u)], params, enable_double_backprop=True)
            linked = [i for i, g in enumerate(grads) if g is not None and g.creator is not None]
            if not linked:
                return True
            v = self.space.unflatten(self.xp.asarray(
                rng.standard_normal(self.space.size).astype(self.dtype)))
            second = chainer.grad([grads[i] for i in linked], params, grad_outputs=[
                chainer.Variable(v[self.space.names[i]]) for i in linked])
        return all(h is None or not bool(self.xp.any(h.array)) for h in second)

    def is_psd(self):
        """Whether H is positive semi-definite by construction: the Gauss-Newton, or a Hessian that
        equals it because the outputs are affine in the tracked parameters on the first
        ``PROBE_EXAMPLES`` training examples (:meth:`outputs_affine_on`; False for a loss without
        the output-Hessian protocol). Cached per parameter values."""
        if self.kind == 'gauss-newton':
            return True
        if not callable(getattr(self.loss_fn, 'outputs', None)):
            return False
        values = self.space.values()
        cached = getattr(self, '_psd', None)
        if cached is None or not bool((cached[0] == values).all()):
            probe = numpy.arange(min(self.n_train, PROBE_EXAMPLES))
            cached = self._psd = (values.copy(), self.outputs_affine_on(probe))
        return cached[1]

    def trace_estimate(self, n_probes=10, seed=0):
        """Hutchinson estimate of trace(H) without the weight decay: mean of z^T H z over
        ``n_probes`` Rademacher vectors z (one batched pass over the training set)."""
        rng = numpy.random.RandomState(seed)
        Z = self.xp.asarray(rng.choice([-1.0, 1.0], (n_probes, self.space.size)).astype(
            self.dtype))
        HZ = self.hvp(Z) - self.weight_decay * Z  # a float or a (P,) vector
        return float((Z * HZ).sum()) / n_probes

    def dense_matrix(self, block_size=None):
        """The full (P, P) curvature matrix (Hessian or Gauss-Newton); see :meth:`dense_hessian`."""
        return self.dense_hessian(block_size)

    def dense_hessian(self, block_size=None):
        """The full (P, P) curvature (Hessian or Gauss-Newton, whichever ``curvature`` names) from
        products with blocks of identity rows, symmetrised.

        Costs P full-training-set HVPs; meant for P up to about 1e4. ``block_size`` rows of the
        identity go through each pass over the data (default: ~4M elements per block).
        """
        P = self.space.size
        if block_size is None:
            block_size = max(1, min(P, (1 << 22) // P))
        H = self.xp.empty((P, P), dtype=self.dtype)
        eye = self.xp.eye(P, dtype=self.dtype)
        with self.progress.phase('Hessian', P) as bar:
            for begin in range(0, P, block_size):
                end = min(begin + block_size, P)
                H[begin:end] = self.hvp(eye[begin:end])
                bar.update(end - begin)
        return (H + H.T) / 2

    def top_eigenvalue(self, n_iter=20, indices=None, seed=0):
        """Power-iteration estimate of the largest |eigenvalue| of H (a float >= 0).

        Returns |v^T H v| for the final unit iterate v, a lower bound on the true value that
        approaches it as ``n_iter`` grows. ``indices`` restricts the loss term to those examples.
        """
        rng = numpy.random.RandomState(seed)
        v = self.xp.asarray(rng.standard_normal(self.space.size).astype(self.dtype))
        v /= self.xp.linalg.norm(v)
        estimate = 0.0
        with self.progress.phase('power iteration', n_iter) as bar:
            for _ in range(n_iter):
                hv = self.hvp(v, indices)
                estimate = abs(float(v.dot(hv)))
                norm = float(self.xp.linalg.norm(hv))
                bar.update()
                if norm == 0.0:
                    break
                v = hv / norm
        return estimate

    def gradient_support(self, seed=0):
        """(P,) numpy bool: True where some training example's loss gradient is non-zero.

        One backward pass over the training set of sum_i r_i L(z_i) with random weights
        r_i ~ N(0, 1) (numpy RandomState(seed)): a coordinate of its gradient is zero exactly when
        (almost surely) every example's gradient is zero there, even at a minimum where the
        gradients cancel. Those coordinates' rows of H are weight_decay only.
        """
        rng = numpy.random.RandomState(seed)
        support = numpy.zeros(self.space.size, dtype=bool)
        with chainer.using_config('train', False), chainer.using_config('enable_backprop', True), \
                exclusive_backward():
            for begin, end, batch in self._local_batches():
                weights = self.xp.asarray(rng.standard_normal(end - begin).astype(self.dtype))
                losses = self.loss_fn(self.model, *batch)
                grads = chainer.grad([F.sum(losses * weights)], self.space.params)
                flat = self.space.flatten([self.xp.zeros(p.shape, p.dtype) if g is None
                                           else g.array for g, p in zip(grads, self.space.params)])
                support |= chainer.backend.CpuDevice().send(flat != 0)
        return self.shard.allreduce_sum(support.astype(numpy.int32)) > 0  # any rank's


def lanczos_eigenvalues(matvec, start, n_iter=30):
    """Ritz values (ascending numpy array) of a symmetric operator after ``n_iter`` Lanczos steps.

    ``matvec(v)`` maps a (P,) vector to (P,); ``start`` (P,) is the first direction. Full
    reorthogonalisation keeps the small tridiagonal matrix faithful. The extreme Ritz values
    converge first: the smallest is an upper bound on the smallest eigenvalue, approaching it.
    """
    xp = chainer.backend.get_array_module(start)
    q = start / xp.linalg.norm(start)
    basis, alphas, betas = [], [], []
    for _ in range(min(n_iter, start.size)):
        basis.append(q)
        w = matvec(q)
        alphas.append(float(q.dot(w)))
        for _ in range(2):  # twice is enough (Giraud et al. 2005)
            for b in basis:
                w = w - b.dot(w) * b
        beta = float(xp.linalg.norm(w))
        if beta <= 1e-10 * max(abs(a) for a in alphas) or len(basis) == n_iter:
            break
        betas.append(beta)
        q = w / beta
    k = len(alphas)
    T = numpy.diag(alphas) + numpy.diag(betas[:k - 1], 1) + numpy.diag(betas[:k - 1], -1)
    return numpy.linalg.eigvalsh(T)
