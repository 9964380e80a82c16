"""Per-example losses: each loss function returns a Variable of shape (B,).

Output-Hessian protocol (Gauss-Newton curvature, K-FAC and EK-FAC): a loss that is a function of
the model's outputs exposes them and the Hessian of the loss with respect to them. The library's
:data:`softmax_cross_entropy_loss`, :data:`sigmoid_cross_entropy_loss` and
:data:`squared_error_loss` are :class:`OutputLoss` objects; for another loss subclass
:class:`OutputLoss` and define

Every method receives the whole batch, ``*batch`` = (x, t, ...), as the loss function does.

* ``outputs(model, *batch)`` -> Variable (B, C): the model's outputs f(x) (default: ``model(x)``
  flattened to (B, C); an ``L.Classifier`` is unwrapped);
* ``loss(outputs, *batch)`` -> Variable (B,): the per-example loss as a function of the outputs;
* ``output_hessian_sqrt(outputs, *batch)`` -> array (B, C, R): a square root of the per-example
  output Hessian, H_out[b] = R[b] R[b]^T (arrays, not Variables; H_out must be PSD, i.e. the loss
  convex in the outputs). Its columns are the pseudo output-gradients of ``fisher='exact'``.

and optionally ``output_hessian_product(outputs, U, *batch)`` -> (B, C) = H_out[b] U[b] (default:
through the square root) and ``sample_output_gradients(outputs, random_state, *batch)`` -> (B, C),
random g with E[g g^T] = H_out (default: R eps, eps ~ N(0, I); the library's losses draw labels from
the model's predictive distribution instead). Calling the object, ``loss_fn(model, *batch)``, gives
``loss(outputs(model, *batch), *batch)`` like any loss function.
"""
import numpy

import chainer
import chainer.functions as F

from chainer_influence.parameters import unwrap_model


class MissingOutputHessianError(TypeError):
    """The loss function does not expose its outputs and output Hessian (see :class:`OutputLoss`)."""


def require_output_loss(loss_fn, what):
    """Raise :class:`MissingOutputHessianError` unless ``loss_fn`` follows the output protocol."""
    missing = [m for m in ('outputs', 'output_hessian_sqrt') if not callable(
        getattr(loss_fn, m, None))]
    if missing:
        raise MissingOutputHessianError(
            '{} needs the Hessian of the loss with respect to the model outputs, but loss_fn {} '
            'has no {}. Use ci.softmax_cross_entropy_loss, ci.sigmoid_cross_entropy_loss or '
            'ci.squared_error_loss, or subclass ci.OutputLoss (outputs, loss, '
            'output_hessian_sqrt); otherwise use curvature=\'hessian\' with ExactSolver, CGSolver '
            'or LiSSASolver.'.format(what, getattr(loss_fn, '__name__', repr(loss_fn)),
                                     ' and '.join(missing)))


def _host(array):
    return chainer.backend.CpuDevice().send(array)


class OutputLoss(object):
    """A per-example loss ``loss(f(x), *batch)`` of the model outputs f(x) (B, C), with the
    output-Hessian protocol described in the module docstring. ``name`` becomes ``__name__``
    (used in cache keys and reports)."""

    def __init__(self, name):
        self.__name__ = name

    def __repr__(self):
        return self.__name__

    def __call__(self, model, *batch):
        return self.loss(self.outputs(model, *batch), *batch)

    def outputs(self, model, *batch):
        y = unwrap_model(model)(batch[0])
        return y if y.ndim == 2 else F.reshape(y, (y.shape[0], -1))

    def loss(self, outputs, *batch):
        raise NotImplementedError

    def output_hessian_sqrt(self, outputs, *batch):
        raise NotImplementedError

    def output_hessian_product(self, outputs, U, *batch):
        R = self.output_hessian_sqrt(outputs, *batch)
        xp = chainer.backend.get_array_module(R)
        return xp.matmul(R, xp.matmul(U[:, None, :], R).transpose(0, 2, 1))[:, :, 0]

    def sample_output_gradients(self, outputs, random_state, *batch):
        R = self.output_hessian_sqrt(outputs, *batch)
        eps = random_state.standard_normal(R.shape[::2]).astype(R.dtype)
        xp = chainer.backend.get_array_module(R)
        return xp.matmul(R, xp.asarray(eps)[:, :, None])[:, :, 0]


def _targets(t, outputs):
    """Targets ``t`` as an array of the outputs' shape (B, C)."""
    t = t.array if isinstance(t, chainer.Variable) else t
    return t.reshape(outputs.shape)


class SoftmaxCrossEntropyLoss(OutputLoss):
    """-log softmax(f(x))_t for integer labels t (B,); outputs: logits (B, C).

    H_out = diag(p) - p p^T with square root R = diag(sqrt p) - p sqrt(p)^T (R R^T = H_out since
    sum p = 1); sampled output gradients: p - onehot(y), y drawn from p.
    """

    def loss(self, outputs, x, t, *rest):
        return F.softmax_cross_entropy(outputs, t, reduce='no', enable_double_backprop=True)

    def _probabilities(self, outputs):
        return F.softmax(outputs).array

    def output_hessian_sqrt(self, outputs, *batch):
        p = self._probabilities(outputs)
        xp = chainer.backend.get_array_module(p)
        s = xp.sqrt(p)
        return s[:, None, :] * xp.eye(p.shape[1], dtype=p.dtype) - p[:, :, None] * s[:, None, :]

    def output_hessian_product(self, outputs, U, *batch):
        p = self._probabilities(outputs)
        return p * U - p * (p * U).sum(axis=1, keepdims=True)

    def sample_output_gradients(self, outputs, random_state, *batch):
        p = self._probabilities(outputs)
        cumulative = numpy.cumsum(_host(p).astype(numpy.float64), axis=1)
        u = random_state.uniform(size=(len(p), 1)) * cumulative[:, -1:]
        labels = numpy.minimum((cumulative < u).sum(axis=1), p.shape[1] - 1)
        xp = chainer.backend.get_array_module(p)
        return p - xp.eye(p.shape[1], dtype=p.dtype)[xp.asarray(labels)]


class SigmoidCrossEntropyLoss(OutputLoss):
    """sum_c [softplus(f_c) - t_c f_c] over independent binary labels t in {0, 1} (-1: ignored),
    t of the outputs' shape (B, C) (or (B,) for one output); outputs: logits (B, C).

    H_out = diag(p (1 - p)) on the labels that are not ignored; sampled output gradients:
    p - y with y ~ Bernoulli(p).
    """

    def loss(self, outputs, x, t, *rest):
        t = _targets(t, outputs)
        keep = (t != -1).astype(outputs.dtype)
        return F.sum((F.softplus(outputs) - outputs * t.astype(outputs.dtype)) * keep, axis=1)

    def _weights(self, outputs, t):
        p = F.sigmoid(outputs).array
        return p, (_targets(t, p) != -1).astype(p.dtype)

    def output_hessian_sqrt(self, outputs, x, t, *rest):
        p, keep = self._weights(outputs, t)
        xp = chainer.backend.get_array_module(p)
        return xp.sqrt(p * (1 - p) * keep)[:, :, None] * xp.eye(p.shape[1], dtype=p.dtype)

    def output_hessian_product(self, outputs, U, x, t, *rest):
        p, keep = self._weights(outputs, t)
        return p * (1 - p) * keep * U

    def sample_output_gradients(self, outputs, random_state, x, t, *rest):
        p, keep = self._weights(outputs, t)
        xp = chainer.backend.get_array_module(p)
        y = xp.asarray(random_state.uniform(size=p.shape) < _host(p)).astype(p.dtype)
        return (p - y) * keep


class SquaredErrorLoss(OutputLoss):
    """0.5 ||f(x) - y||^2 per example (the Gaussian negative log-likelihood up to a constant);
    y of the outputs' shape. H_out = I; sampled output gradients: eps ~ N(0, I)."""

    def loss(self, outputs, x, y, *rest):
        diff = outputs - _targets(y, outputs).astype(outputs.dtype)
        return 0.5 * F.sum(diff * diff, axis=1)

    def output_hessian_sqrt(self, outputs, *batch):
        xp = chainer.backend.get_array_module(outputs)
        B, C = outputs.shape
        return xp.broadcast_to(xp.eye(C, dtype=outputs.dtype), (B, C, C))

    def output_hessian_product(self, outputs, U, *batch):
        return U


softmax_cross_entropy_loss = SoftmaxCrossEntropyLoss('softmax_cross_entropy_loss')
softmax_cross_entropy_loss.__doc__ = """Per-example softmax cross-entropy, shape (B,), twice
differentiable: ``softmax_cross_entropy_loss(model, x, t)``. ``model`` is a plain Link (x -> logits)
or an ``L.Classifier`` (its ``.predictor`` is used). Follows the output-Hessian protocol."""
sigmoid_cross_entropy_loss = SigmoidCrossEntropyLoss('sigmoid_cross_entropy_loss')
squared_error_loss = SquaredErrorLoss('squared_error_loss')


# its labels are class indices into the model's outputs: validated as such (see checks.py)
softmax_cross_entropy_loss.class_labels = True


def signed_margins(model, x, y):
    """s = y * f(x), shape (B,): f gives one score per example ((B,) or (B, 1)); the label is +1
    where ``y > 0`` and -1 elsewhere, so labels in {0, 1} and in {-1, +1} both work."""
    scores = F.reshape(unwrap_model(model)(x), (-1,))
    y = y.array if isinstance(y, chainer.Variable) else y
    xp = chainer.backend.get_array_module(y)
    return scores * xp.where(y > 0, 1, -1).astype(scores.dtype)


def hinge_loss(model, x, y):
    """Per-example hinge max(0, 1 - s), s = y * f(x) (see :func:`signed_margins`), shape (B,).

    Its Hessian is zero almost everywhere: use it to fit and evaluate SVMs, and
    :func:`smooth_hinge_loss` (t > 0) for influence.
    """
    return F.relu(1 - signed_margins(model, x, y))


def smooth_hinge_loss(t):
    """Loss function ``loss_fn(model, x, y)`` -> (B,): the smooth hinge t log(1 + exp((1 - s) / t)),
    s = y * f(x) (see :func:`signed_margins`), of a binary linear SVM (Koh & Liang 2017, Sec. 4.1).

    It lies above the hinge max(0, 1 - s) by at most t log 2 and tends to it as t -> 0. For t > 0 it
    is written as ``t * logsumexp([0, (1 - s) / t])``, twice differentiable and free of overflow
    for any t (``F.softplus(..., beta=1/t)`` overflows in its second derivative for small t).
    ``t = 0`` returns :func:`hinge_loss`.
    """
    t = float(t)
    if t < 0:
        raise ValueError('t must be >= 0, got {}'.format(t))
    if t == 0:
        return hinge_loss

    def loss(model, x, y):
        u = (1 - signed_margins(model, x, y)) / t
        return t * F.logsumexp(F.stack([u.xp.zeros_like(u.array), u], axis=1), axis=1)

    loss.__name__ = 'smooth_hinge_loss_t{!r}'.format(t)  # distinct cache keys per t
    return loss


class ScaledLoss(object):
    """``factor * loss_fn(model, *batch)``, keeping the output-Hessian methods of ``loss_fn`` (if
    any) consistent with the scaled loss. Used to match a loss to the scale it was trained at,
    e.g. F.mean_squared_error (a mean over outputs) against 0.5 * sum over outputs."""

    def __init__(self, loss_fn, factor):
        self.base = loss_fn
        self.factor = float(factor)
        self.__name__ = '{}_x{:.6g}'.format(getattr(loss_fn, '__name__', 'loss'), self.factor)

    def __call__(self, model, *batch):
        return self.factor * self.base(model, *batch)

    def __getattr__(self, name):
        scaled = {'loss': 1, 'output_hessian_product': 1, 'output_hessian_sqrt': 0.5,
                  'sample_output_gradients': 0.5}
        method = getattr(self.__dict__['base'], name)  # AttributeError when the base lacks it
        if name not in scaled:
            return method
        power = scaled[name]

        def scaled_method(*args, **kwargs):
            return method(*args, **kwargs) * self.factor ** power
        return scaled_method


class ReducedLoss(object):
    """Per-example losses (B,) from a Chainer loss function that accepts ``reduce='no'``
    (e.g. ``F.hinge``): ``lossfun(f(x), t, reduce='no')`` summed or averaged (``reduction``) over
    every axis but the batch axis, as ``L.Classifier(lossfun=...)`` trained it."""

    def __init__(self, lossfun, reduction):
        if reduction not in ('sum', 'mean'):
            raise ValueError("reduction must be 'sum' or 'mean', got {!r}".format(reduction))
        self.lossfun = lossfun
        self.reduction = reduction
        self.__name__ = '{}_{}'.format(getattr(lossfun, '__name__', 'loss'), reduction)

    def __call__(self, model, *batch):
        y = unwrap_model(model)(*batch[:-1])
        per = self.lossfun(y, batch[-1], reduce='no')
        per = F.reshape(per, (per.shape[0], -1))
        return F.sum(per, axis=1) if self.reduction == 'sum' else F.mean(per, axis=1)
