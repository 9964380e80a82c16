"""Rules that turn one function's inputs and output gradient into per-example parameter gradients.

Each rule has

* ``gradient(function, in_data, out_grad, index, B)`` -> (B, *in_data[index].shape): the gradient
  of each example's loss with respect to input ``index`` (a parameter, or a reshape of one);
* ``contract(function, in_data, out_grad, index, B, V)`` with V (K, *input shape) -> (B, K): the
  dot products of those gradients with K vectors. The default builds the per-example gradients of
  this one parameter for this batch and multiplies; rules override it where that is cheaper.

The weight rules of Linear, Convolution2D (one group), Deconvolution2D (one group) and EmbedID
also have ``outer_operands(function, in_data, out_grad, B)`` -> (u (B, T, rows), w (B, T, cols)):
example b's weight gradient, seen as a (rows, cols) matrix (rows = W.shape[0]), is
sum_t u[b, t] w[b, t]^T. K-FAC's Kronecker factors are the covariances of u and w.

``in_data`` holds the function's retained inputs (None where not retained) and ``out_grad`` the
gradients of its outputs, the per-example losses being summed, so row b of ``gy`` belongs to example b.
"""
import numpy

import chainer
from chainer.functions.array.broadcast import BroadcastTo
from chainer.functions.connection.convolution_2d import Convolution2DFunction
from chainer.functions.connection.deconvolution_2d import Deconvolution2DFunction
from chainer.functions.connection.embed_id import EmbedIDFunction
from chainer.functions.connection.linear import LinearFunction
from chainer.functions.normalization.batch_normalization import FixedBatchNormalization
from chainer.utils import conv


class FallbackWarning(UserWarning):
    """A function has no vectorised rule; the slow per-example fallback is used."""


def _xp(a):
    return chainer.backend.get_array_module(a)


class Rule(object):

    def gradient(self, function, in_data, out_grad, index, B):
        raise NotImplementedError

    def contract(self, function, in_data, out_grad, index, B, V):
        g = self.gradient(function, in_data, out_grad, index, B)
        return g.reshape(B, -1) @ V.reshape(V.shape[0], -1).T


class LinearRule(Rule):
    """``y = x W^T + b``; x (B*T, I), gy (B*T, O) with T > 1 when ``n_batch_axes > 1``."""

    def gradient(self, function, in_data, out_grad, index, B):
        gy = out_grad[0].reshape(B, -1, out_grad[0].shape[-1])
        if index == 2:
            return gy.sum(axis=1)
        x = in_data[0].reshape(B, -1, in_data[0].shape[-1])
        return _xp(x).matmul(gy.transpose(0, 2, 1), x)

    def outer_operands(self, function, in_data, out_grad, B):
        """u = gy (B, T, O), w = x (B, T, I)."""
        gy = out_grad[0]
        return gy.reshape(B, -1, gy.shape[-1]), in_data[0].reshape(B, -1, in_data[0].shape[-1])

    def contract(self, function, in_data, out_grad, index, B, V):
        gy = out_grad[0].reshape(B, -1, out_grad[0].shape[-1])
        K, (T, O) = V.shape[0], gy.shape[1:]
        if index == 2:
            return gy.sum(axis=1) @ V.T
        I = in_data[0].shape[-1]
        if T * K > I:  # building the (B, O, I) gradients is the smaller intermediate
            return Rule.contract(self, function, in_data, out_grad, index, B, V)
        # <gy_b x_b^T, V_k> = sum_t gy_bt . (V_k x_bt)
        xv = in_data[0].reshape(B * T, I) @ V.reshape(K * O, I).T
        return (xv.reshape(B, T, K, O) * gy[:, :, None, :]).sum(axis=(1, 3))


def im2col(x, kh, kw, sy, sx, ph, pw, cover_all, dy, dx):
    """(B, C, H, W) -> (B, C, kh, kw, out_h, out_w) on numpy or cupy."""
    if isinstance(x, numpy.ndarray):
        return conv.im2col_cpu(x, kh, kw, sy, sx, ph, pw, cover_all=cover_all, dy=dy, dx=dx)
    return conv.im2col_gpu(x, kh, kw, sy, sx, ph, pw, cover_all=cover_all, dy=dy, dx=dx)


def _grouped_outer(a, cols, groups):
    """Per-example sum over positions: a (B, Ca, L), cols (B, Cc*k, L) -> (B, G, Ca/G, Cc/G*k)."""
    B, Ca, L = a.shape
    a = a.reshape(B, groups, Ca // groups, L)
    cols = cols.reshape(B, groups, -1, L)
    return _xp(a).matmul(a, cols.transpose(0, 1, 3, 2))


class _ConvolutionRule(Rule):
    """Shared by convolution and deconvolution: the weight gradient of one example is the sum
    over positions of one operand times the kernel-sized patches of the other."""

    def operands(self, x, gy):
        """(patched, other): im2col is applied to ``patched``; ``other`` supplies W's first axis."""
        raise NotImplementedError

    def _patches(self, function, in_data, out_grad, B):
        """(other (B, C, L), cols (B, C' * kh * kw, L)) over the L positions."""
        W, f = in_data[1], function
        patched, other = self.operands(in_data[0], out_grad[0])
        col = im2col(patched, W.shape[2], W.shape[3], f.sy, f.sx, f.ph, f.pw, f.cover_all,
                     f.dy, f.dx)
        if col.shape[4:] != other.shape[2:]:
            raise RuntimeError('convolution geometry mismatch: patches {} vs {}'.format(
                col.shape, other.shape))
        L = other.shape[2] * other.shape[3]
        return other.reshape(B, other.shape[1], L), col.reshape(B, -1, L)

    def gradient(self, function, in_data, out_grad, index, B):
        gy = out_grad[0]
        if index == 2:
            return gy.sum(axis=(2, 3))
        other, cols = self._patches(function, in_data, out_grad, B)
        g = _grouped_outer(other, cols, function.groups)
        return g.reshape((B,) + in_data[1].shape)

    def outer_operands(self, function, in_data, out_grad, B):
        """u = ``other`` (B, L, C), w = patches (B, L, C' kh kw); one group only."""
        if function.groups != 1:
            raise NotImplementedError('outer operands of a grouped convolution')
        other, cols = self._patches(function, in_data, out_grad, B)
        return other.transpose(0, 2, 1), cols.transpose(0, 2, 1)


class Convolution2DRule(_ConvolutionRule):
    """W (C_out, C_in/G, kh, kw): per example, sum over output positions of gy x patch."""

    def operands(self, x, gy):
        return x, gy


class Deconvolution2DRule(_ConvolutionRule):
    """W (C_in, C_out/G, kh, kw): per example, sum over input positions of x times gy patch."""

    def operands(self, x, gy):
        return gy, x


class EmbedIDRule(Rule):
    """W (V, D); ids x (B, ...), gy (B, ..., D); rows of ``ignore_label`` contribute nothing."""

    def _ids_and_mask(self, function, in_data, B):
        ids = in_data[0].reshape(B, -1)
        if function.ignore_label is None:
            return ids, None
        mask = ids != function.ignore_label
        return _xp(ids).where(mask, ids, 0), mask

    def _gy(self, out_grad, B, mask):
        gy = out_grad[0].reshape(B, -1, out_grad[0].shape[-1])
        return gy if mask is None else gy * mask[:, :, None]

    def outer_operands(self, function, in_data, out_grad, B):
        """u = one-hot ids (B, T, V) (zero rows for ``ignore_label``), w = gy (B, T, D)."""
        xp = _xp(in_data[0])
        ids, mask = self._ids_and_mask(function, in_data, B)
        gy = self._gy(out_grad, B, mask)
        n_vocab = function._w_shape[0]
        onehot = (ids[:, :, None] == xp.arange(n_vocab)[None, None, :]).astype(gy.dtype)
        return (onehot if mask is None else onehot * mask[:, :, None]), gy

    def gradient(self, function, in_data, out_grad, index, B):
        onehot, gy = self.outer_operands(function, in_data, out_grad, B)
        return _xp(gy).matmul(onehot.transpose(0, 2, 1), gy)

    def contract(self, function, in_data, out_grad, index, B, V):
        ids, mask = self._ids_and_mask(function, in_data, B)
        gy = self._gy(out_grad, B, mask)
        rows = V[:, ids]  # (K, B, T, D)
        return (rows * gy[None]).sum(axis=(2, 3)).T


class FixedBatchNormalizationRule(Rule):
    """BatchNormalization in eval mode: gamma gets sum(gy * x_hat), beta gets sum(gy), per example."""

    def gradient(self, function, in_data, out_grad, index, B):
        gy = out_grad[0]
        axes = tuple(a for a in function.axis if a != 0)
        if index == 2:
            return gy.sum(axis=axes)
        xp = _xp(gy)
        x, mean, var = in_data[0], in_data[3], in_data[4]
        e = function.expander
        x_hat = (x - mean[e]) / xp.sqrt(var[e] + function.eps)
        return (gy * x_hat).sum(axis=axes)


class BroadcastToRule(Rule):
    """A parameter broadcast over the batch (``F.bias``, ``F.scale``): sum gy over broadcast axes."""

    def gradient(self, function, in_data, out_grad, index, B):
        gy = out_grad[0]
        in_shape = function.inputs[0].shape
        lead = gy.ndim - len(in_shape)
        if lead == 0 and in_shape[0] != 1:
            raise NotImplementedError('a parameter broadcast to {} has no batch axis to split'
                                      .format(gy.shape))
        if lead > 1:
            gy = gy.sum(axis=tuple(range(1, lead)))
        offset = min(lead, 1)  # gy's axis of in_shape[j] is j + offset (batch axis first)
        axes = tuple(j + offset for j, n in enumerate(in_shape)
                     if j + offset > 0 and n == 1 and gy.shape[j + offset] != 1)
        if axes:
            gy = gy.sum(axis=axes, keepdims=True)
        return gy.reshape((B,) + tuple(in_shape[1:] if lead == 0 else in_shape))


class PerExampleFallback(Rule):
    """Any function whose outputs keep the batch axis: one local backward per example.

    Row b of the output gradient is example b's; masking the others and calling the function's own
    ``backward`` gives example b's gradient exactly.
    """

    def gradient(self, function, in_data, out_grad, index, B):
        grads = [g for g in out_grad if g is not None]
        if any(g.ndim == 0 or g.shape[0] != B for g in grads):
            raise NotImplementedError(
                '{} receives a tracked parameter but its outputs have no batch axis of size {} '
                '(output gradient shapes {}); per-example gradients through it are not supported. '
                'Exclude that parameter with params=[...].'.format(
                    type(function).__name__, B, [g.shape for g in grads]))
        xp = _xp(grads[0])
        rows = []
        for b in range(B):
            masked = []
            for g in out_grad:
                if g is None:
                    masked.append(None)
                    continue
                m = xp.zeros_like(g)
                m[b] = g[b]
                masked.append(chainer.Variable(m))
            with chainer.using_config('enable_backprop', False):
                gxs = function.backward((index,), tuple(masked))
            # FunctionNode.backward may return the gradients of all inputs instead of the targets
            gx = gxs[index] if len(gxs) == len(function.inputs) else gxs[0]
            shape = function.inputs[index].shape
            rows.append(xp.zeros(shape, dtype=grads[0].dtype) if gx is None else gx.array)
        return xp.stack(rows)


_RULES = {
    LinearFunction: (LinearRule(), (1, 2)),
    Convolution2DFunction: (Convolution2DRule(), (1, 2)),
    Deconvolution2DFunction: (Deconvolution2DRule(), (1, 2)),
    EmbedIDFunction: (EmbedIDRule(), (1,)),
    FixedBatchNormalization: (FixedBatchNormalizationRule(), (1, 2)),
    BroadcastTo: (BroadcastToRule(), (0,)),
}


def rule_for(function, index):
    """The vectorised rule for input ``index`` of ``function``, or None (use the fallback)."""
    entry = _RULES.get(type(function))
    if entry is None or index not in entry[1]:
        return None
    return entry[0]
