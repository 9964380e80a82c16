"""Kronecker-factored curvature statistics: what K-FAC and EK-FAC are fitted from.

:class:`KroneckerFactorHook` reads them off the per-example gradients of backward passes (using
the per-example rules of :mod:`~chainer_influence.gradient_rules`); :func:`pseudo_gradient_passes`
drives those passes over the training set. Each tracked parameter belongs to one :class:`Block`:
a Kronecker block (a layer weight, its bias as a last column) or a diagonal one. The solvers that
turn these statistics into inverse-curvature products are in :mod:`~chainer_influence.kfac`,
whose docstring states the approximation.
"""
import numpy

import chainer
import chainer.functions as F
from chainer.backend import get_array_module
from chainer.functions.array.reshape import Reshape
from chainer.functions.connection.convolution_2d import Convolution2DFunction
from chainer.functions.connection.deconvolution_2d import Deconvolution2DFunction
from chainer.functions.connection.embed_id import EmbedIDFunction
from chainer.functions.connection.linear import LinearFunction

from chainer_influence import gradient_rules
from chainer_influence.batches import iterate_batches
from chainer_influence.hooks import PerExampleFunctionHook, check_per_example_losses
from chainer_influence.hooks import exclusive_backward, tracked_name
from chainer_influence.progress import QUIET

FISHER_KINDS = ('sampled', 'exact')
CHUNK_BYTES = 64 * 2 ** 20   # per-example K-FAC work runs on chunks of examples of about this size


def symmetric_eigh(M):
    """(w (n,) ascending and >= 0, Q (n, n)) of a symmetric PSD matrix: symmetrised, ``eigh``
    with an SVD fallback; tiny negative eigenvalues (rounding) are clipped to 0."""
    xp = get_array_module(M)
    if not bool(xp.isfinite(M).all()):
        raise FloatingPointError('non-finite Kronecker factor: check the model for NaN/inf')
    M = (M + M.T) / 2
    try:
        w, Q = xp.linalg.eigh(M)
        ok = bool(xp.isfinite(w).all())
    except numpy.linalg.LinAlgError:
        ok = False
    if not ok:  # for a symmetric PSD matrix the SVD is an eigendecomposition
        Q, w, _ = xp.linalg.svd(M)
        order = xp.argsort(w)
        w, Q = w[order], Q[:, order]
    return xp.maximum(w, 0), Q


class Block(object):
    """Tracked parameters seen as one (rows, cols) matrix, K of them at a time (K, rows, cols):
    a layer weight (rows = W.shape[0]) with its bias as the last column, or one parameter as
    (1, size). ``kronecker``: whether the block has Kronecker factors (else it is diagonal)."""

    def __init__(self, names, rows, kronecker, activation_left=False, left_diagonal=False):
        self.names = list(names)
        self.rows = int(rows)
        self.kronecker = kronecker
        self.activation_left = activation_left  # u (not w) is the activation side
        self.left_diagonal = left_diagonal        # L is diagonal (EmbedID's one-hot rows)

    def describe(self):
        return {'names': self.names, 'rows': self.rows, 'kronecker': self.kronecker,
                'activation_left': self.activation_left, 'left_diagonal': self.left_diagonal}

    def gather(self, parts, K):
        """{name: (K, *shape)} -> (K, rows, cols)."""
        mats = [parts[name].reshape(K, self.rows, -1) for name in self.names]
        return mats[0] if len(mats) == 1 else get_array_module(mats[0]).concatenate(mats, axis=2)

    def scatter(self, M, shapes, out):
        """(K, rows, cols) -> ``out[name]`` (K, *shape) for each parameter of the block."""
        begin = 0
        for name in self.names:
            shape = shapes[name]
            width = int(numpy.prod(shape)) // self.rows
            out[name] = M[:, :, begin:begin + width].reshape((len(M),) + tuple(shape))
            begin += width


class KroneckerFactorHook(PerExampleFunctionHook):
    """Reads K-FAC statistics off the per-example gradients of backward passes.

    * ``mode='factors'`` (pseudo output-gradients): Kronecker factors (sums of u u^T / T and
      w w^T) per layer and sums of squared per-example gradients of the diagonal parameters;
      discovers the blocks.
    * ``mode='eigen'`` (pseudo output-gradients; ``blocks`` fitted): sums over examples of the
      squared per-example gradients rotated into each block's basis (EK-FAC's eigenvalues).
    * ``mode='quadratic'`` (the real per-example losses; ``blocks`` and their ``denominators``
      d): :meth:`backward` sets ``values`` (B,) to sum over the blocks of sum (rotated g_b)^2 / d,
      i.e. g_b^T (G + shift I)^-1 g_b (self-influence).

    The (rows, cols) per-example gradient sum_t u_t w_t^T of a Kronecker block is never built
    when T = 1 (then its rotation is the outer product of u' = Q_L^T u and w' = Q_R^T w, and its
    square that of u'^2 and w'^2); for T > 1 it is built for chunks of about ``CHUNK_BYTES``. In
    the 'eigen' and 'quadratic' modes the uses of a weight are gathered until :meth:`end_backward`
    (a weight used twice has the sum of both as its gradient). Call :meth:`end_backward` after
    each backward (:meth:`backward` does). Sums, not means: divide by N afterwards.

    Args:
        space (ParameterSpace): the tracked parameters.
        mode (str): 'factors', 'eigen' or 'quadratic'.
        blocks (list): the fitted ``(Block, Q_L, Q_R, eigenvalues)`` (modes 'eigen', 'quadratic').
        denominators (list): per block, (rows, cols) eigenvalue + shift (mode 'quadratic').
    """

    def __init__(self, space, mode='factors', blocks=None, denominators=None):
        super().__init__()
        self.space = space
        self.mode = mode
        self._name_of = {id(p): name for name, p in zip(space.names, space.params)}
        self.blocks = {}          # weight name -> Block (Kronecker blocks, discovered)
        self.folded_bias = {}     # bias name -> weight name
        self.left, self.right = {}, {}
        self.diagonal = {}        # name -> (size,) sum of squares
        self.eigen = {}           # weight name -> (rows, cols) sum of squares in the eigenbasis
        self.bases = {}           # weight name -> (Q_L or None, Q_R)
        self.inverse = {}         # weight name -> (rows, cols), diagonal name -> (size,): 1 / d
        self.values = None        # mode 'quadratic': (B,) float64
        self.batch_size = None
        self.count_activations = True
        self._batch = {}          # diagonal name -> (B, size) per-example gradient
        self._pending = {}        # weight name -> [(function, in_data, out_grad)] of a backward
        for i, (block, QL, QR, _) in enumerate(blocks or ()):
            d = None if denominators is None else denominators[i]
            if block.kronecker:
                self.blocks[block.names[0]] = block
                self.folded_bias.update((bias, block.names[0]) for bias in block.names[1:])
                self.bases[block.names[0]] = (QL, QR)
                if d is not None:
                    self.inverse[block.names[0]] = 1 / d
            elif d is not None:
                self.inverse[block.names[0]] = (1 / d).ravel()

    def backward(self, losses):
        """Mode 'quadratic': back-propagate ``sum(losses)`` for per-example losses (B,) and set
        ``values`` (B,) float64."""
        check_per_example_losses(losses)
        with self._active(), exclusive_backward(self):
            self.batch_size = len(losses)
            self.values = self.space.xp.zeros(len(losses), dtype=numpy.float64)
            chainer.grad([F.sum(losses)], self.space.params)
            self.end_backward()
        return self

    # ---- FunctionHook callbacks ----------------------------------------------------------
    def backward_postprocess(self, function, in_data, out_grad):
        if self._ignores_this_pass() or isinstance(function, Reshape):
            return  # a reshape of a parameter is handled where its result is consumed
        for index, node in enumerate(function.inputs):
            name = tracked_name(node, self._name_of)
            if name is None:
                continue
            role = self._role(function, index, name)
            if role == 'weight':
                use = (function, in_data, out_grad)
                if self.mode == 'factors':
                    self._kronecker(self.blocks[name], [use])
                else:
                    self._pending.setdefault(name, []).append(use)
            elif role is None:
                self._diagonal(function, in_data, out_grad, index, name)

    def end_backward(self):
        """Fold this backward's per-example results into the accumulators."""
        pending, self._pending = self._pending, {}
        for name, uses in pending.items():
            self._kronecker(self.blocks[name], uses)
        batch, self._batch = self._batch, {}
        for name, g in batch.items():
            squares = g.astype(numpy.float64) ** 2
            if self.mode == 'quadratic':
                self.values += squares.dot(self.inverse[name])
            else:
                self.diagonal[name] = self.diagonal.get(name, 0) + squares.sum(axis=0)

    def allreduce(self, shard):
        """Sum this mode's statistics over the ranks of a :class:`~chainer_influence.distributed.
        Shard` (no-op in one process); every rank must have passed over some examples."""
        if not shard.distributed:
            return
        stores = [self.left, self.right, self.diagonal] if self.mode == 'factors' else [self.eigen]
        keys = [(i, name) for i, store in enumerate(stores) for name in sorted(store)]
        shard.check_same(keys, 'the K-FAC statistics\' layers')
        sums = shard.allreduce_sums([stores[i][name] for i, name in keys])
        for (i, name), total in zip(keys, sums):
            stores[i][name] = total

    # ---- internals -----------------------------------------------------------------------
    def _role(self, function, index, name):
        """'weight' (Kronecker block), 'bias' (folded into its weight's block) or None."""
        kind = type(function)
        if kind in (Convolution2DFunction, Deconvolution2DFunction) and function.groups != 1:
            return None
        if kind not in (LinearFunction, Convolution2DFunction, Deconvolution2DFunction,
                        EmbedIDFunction) or index == 0:
            return None
        if index == 2:
            if kind is Deconvolution2DFunction:
                return None  # its bias lives on the output positions, not on the patches
            weight = tracked_name(function.inputs[1], self._name_of)
            if weight is None:
                return None
            self._register(function, weight, name)
            return 'bias'
        bias = None
        if len(function.inputs) > 2 and kind is not Deconvolution2DFunction:
            bias = tracked_name(function.inputs[2], self._name_of)
        self._register(function, name, bias)
        return 'weight'

    def _register(self, function, weight, bias):
        block = self.blocks.get(weight)
        names = [weight] + ([] if bias is None else [bias])
        if block is None:
            if self.mode != 'factors':
                raise RuntimeError('the model used parameter {} differently in this pass than '
                                   'when the K-FAC factors were fitted'.format(weight))
            kind = type(function)
            block = Block(names, function.inputs[1].shape[0], True,
                          activation_left=kind in (Deconvolution2DFunction, EmbedIDFunction),
                          left_diagonal=kind is EmbedIDFunction)
            self.blocks[weight] = block
            if bias is not None:
                self.folded_bias[bias] = weight
        elif block.names != names:
            raise NotImplementedError(
                'parameter {} is used with different biases ({} and {}); K-FAC supports a '
                'weight shared only with the same bias'.format(weight, block.names[1:], names[1:]))

    def _kronecker(self, block, uses):
        """Fold the uses of a block's weight in one backward (one use in mode 'factors')."""
        name = block.names[0]
        # the factors and EK-FAC's eigenvalues in float64; self-influence, whose values are
        # returned in the model's dtype, in that dtype (at least float32)
        dtype = None if self.mode == 'quadratic' else numpy.float64
        for begin, end, u, w in _chunked_operands(block, uses, self.batch_size, dtype):
            if self.mode == 'factors':
                self._add_factors(block, u, w)
                continue
            QL, QR = self.bases[name]
            rotated = _rotated_gradients(u, w, QL, QR)
            if self.mode == 'eigen':
                self.eigen[name] = self.eigen.get(name, 0) + _sum_of_squares(rotated)
            else:
                self.values[begin:end] += _weighted_squares(rotated, self.inverse[name])

    def _add_factors(self, block, u, w):
        name = block.names[0]
        T = u.shape[1]
        if self.count_activations or not block.activation_left:
            u2 = u.reshape(-1, u.shape[2])
            L = (u2 * u2).sum(axis=0) if block.left_diagonal else u2.T.dot(u2)
            self.left[name] = self.left.get(name, 0) + L / T
        if self.count_activations or block.activation_left:
            w2 = w.reshape(-1, w.shape[2])
            self.right[name] = self.right.get(name, 0) + w2.T.dot(w2)

    def _diagonal(self, function, in_data, out_grad, index, name):
        if name in self.blocks or name in self.folded_bias:
            raise NotImplementedError(
                'parameter {} reaches the loss both through a {} layer and through {}; K-FAC does '
                'not support that: exclude it with params=[...]'.format(
                    name, 'Kronecker', type(function).__name__))
        if self.mode == 'eigen':
            return
        B = self.batch_size
        rule = gradient_rules.rule_for(function, index) or gradient_rules.PerExampleFallback()
        g = rule.gradient(function, in_data, out_grad, index, B).reshape(B, -1)
        self._batch[name] = self._batch.get(name, 0) + g


def _example_slice(in_data, out_grad, B, begin, end):
    """(in_data, out_grad) of examples begin:end of a batch of B: the first input and the first
    output gradient (B or B * T rows, example-major) are sliced, the weight and bias kept."""
    def part(a):
        per = a.shape[0] // B
        return a[begin * per:end * per]
    return (part(in_data[0]),) + tuple(in_data[1:]), (part(out_grad[0]),) + tuple(out_grad[1:])


def _chunked_operands(block, uses, B, dtype):
    """(begin, end, u (c, T, rows), w (c, T, cols)) over chunks of the B examples, contiguous in
    ``dtype`` (None: the operands' own, at least float32): the outer operands of the uses of the
    block's weight, concatenated along T, with the bias column (w = 1) appended for a folded bias.
    The first chunk, one example, sizes the others so that their operands (and their
    (c, rows, cols) gradients when T > 1) take about ``CHUNK_BYTES`` in float64.
    """
    begin, size = 0, 1
    while begin < B:
        end = min(begin + size, B)
        parts = [gradient_rules.rule_for(function, 1).outer_operands(
            function, *_example_slice(in_data, out_grad, B, begin, end), end - begin)
            for function, in_data, out_grad in uses]
        u, w = (parts[0][k] if len(parts) == 1 else
                get_array_module(parts[0][k]).concatenate([p[k] for p in parts], axis=1)
                for k in (0, 1))
        chunk_dtype = dtype or numpy.promote_types(u.dtype, numpy.float32)
        yield (begin, end, _contiguous(u, chunk_dtype),
               _contiguous(w, chunk_dtype, ones_column=len(block.names) > 1))
        if begin == 0:
            T, rows, cols = u.shape[1], u.shape[2], w.shape[2]
            size = max(1, CHUNK_BYTES // (8 * (T * (rows + cols) + (rows * cols if T > 1 else 0))))
        begin = end


def _contiguous(a, dtype, ones_column=False):
    """A contiguous ``dtype`` copy of a (c, T, n), with a last column of ones appended (a folded
    bias: (c, T, n + 1)) when ``ones_column``."""
    if not ones_column:
        return get_array_module(a).ascontiguousarray(a, dtype=dtype)
    out = get_array_module(a).empty(a.shape[:2] + (a.shape[2] + 1,), dtype=dtype)
    out[:, :, :-1] = a
    out[:, :, -1] = 1
    return out


def _rotated_gradients(u, w, QL, QR):
    """The per-example gradients sum_t u_t w_t^T of u (c, T, rows), w (c, T, cols) rotated to
    Q_L^T . Q_R (Q_L None: identity), in the operands' dtype:
    for T = 1 the factors (u Q_L, w Q_R) (c, rows), (c, cols) of the rank-one result; for T > 1
    the (c, rows, cols) result, in the cheaper of two orders."""
    QR = QR.astype(u.dtype, copy=False)
    QL = None if QL is None else QL.astype(u.dtype, copy=False)
    T, rows, cols = u.shape[1], u.shape[2], w.shape[2]
    xp = get_array_module(u)
    if T == 1:
        u, w = u[:, 0], w[:, 0]
        return (u if QL is None else u.dot(QL)), w.dot(QR)
    left = 0 if QL is None else rows * rows
    if T * (left + cols * cols) <= left * cols + rows * cols * cols:  # rotate the operands
        if QL is not None:
            u = xp.matmul(u, QL)
        return xp.matmul(u.transpose(0, 2, 1), xp.matmul(w, QR))
    return rotate(xp.matmul(u.transpose(0, 2, 1), w), QL, QR)


def _squares(rotated):
    """float64 squares of :func:`_rotated_gradients`' result (a pair for T = 1)."""
    if isinstance(rotated, tuple):
        return tuple(a.astype(numpy.float64) ** 2 for a in rotated)
    return rotated.astype(numpy.float64) ** 2


def _sum_of_squares(rotated):
    """(rows, cols) sum over the examples of the squared rotated gradients."""
    squares = _squares(rotated)
    if isinstance(squares, tuple):
        return squares[0].T.dot(squares[1])
    return squares.sum(axis=0)


def _weighted_squares(rotated, inverse):
    """(c,) per example, sum_jk (rotated gradient)_jk^2 inverse_jk for inverse (rows, cols)."""
    squares = _squares(rotated)
    if isinstance(squares, tuple):
        return (squares[0].dot(inverse) * squares[1]).sum(axis=1)
    return squares.reshape(len(squares), -1).dot(inverse.ravel())


def pseudo_gradient_passes(curvature, hook, fisher, seed, progress=False, title='K-FAC'):
    """Back-propagate pseudo output-gradients over the training set with ``hook`` active, then
    sum the hook's statistics over the ranks of ``curvature.shard`` (each passes over its part).

    Per batch, the outputs f(x) are computed once; 'sampled' back-propagates one draw of
    ``loss_fn.sample_output_gradients`` (numpy RandomState([seed, global batch index]): the same
    seed and batch size give the same draws with any number of processes), 'exact' each column
    of ``loss_fn.output_hessian_sqrt`` in turn (``hook.count_activations`` is True only for the
    first). With a communicator each rank takes whole global batches.
    """
    loss_fn, model, params = curvature.loss_fn, curvature.model, curvature.space.params
    size = curvature.batch_size
    first, last = curvature.shard.aligned(size)
    display = getattr(curvature, 'progress', QUIET)
    with display.phase(title, last - first, enabled=progress) as bar:
        for begin, end, batch in iterate_batches(curvature.train, size, curvature.device,
                                                 first, last):
            rng = numpy.random.RandomState([seed, begin // size])
            with chainer.using_config('train', False), \
                    chainer.using_config('enable_backprop', True), hook, exclusive_backward(hook):
                y = loss_fn.outputs(model, *batch)
                if y.ndim != 2:
                    raise ValueError('loss_fn.outputs must return (B, C) outputs, got shape {}'
                                     .format(y.shape))
                if fisher == 'sampled':
                    columns = [loss_fn.sample_output_gradients(y.array, rng, *batch)]
                else:
                    R = loss_fn.output_hessian_sqrt(y.array, *batch)
                    columns = [R[:, :, c] for c in range(R.shape[2])]
                hook.batch_size = len(y)
                for c, g in enumerate(columns):
                    hook.count_activations = c == 0
                    g = get_array_module(g).ascontiguousarray(g.astype(y.dtype, copy=False))
                    chainer.grad([y], params, grad_outputs=[chainer.Variable(g)])
                    hook.end_backward()
            bar.update(end - begin)
    hook.allreduce(curvature.shard)


def rotate(M, QL, QR):
    """Q_L^T M Q_R for M (K, rows, cols); None stands for the identity."""
    if QL is not None:
        M = get_array_module(M).matmul(QL.T, M)
    return M if QR is None else get_array_module(M).matmul(M, QR)


def rotate_back(M, QL, QR):
    """Q_L M Q_R^T, the inverse of :func:`rotate`."""
    if QL is not None:
        M = get_array_module(M).matmul(QL, M)
    return M if QR is None else get_array_module(M).matmul(M, QR.T)
