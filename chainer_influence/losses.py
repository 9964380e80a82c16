"""Per-example losses: each function returns a Variable of shape (B,)."""
import chainer
import chainer.functions as F

from chainer_influence.parameters import unwrap_model


def softmax_cross_entropy_loss(model, x, t):
    """Per-example softmax cross-entropy, shape (B,), twice differentiable.

    ``model`` is a plain Link (x -> logits) or an ``L.Classifier`` (its ``.predictor`` is used).
    """
    logits = unwrap_model(model)(x)
    return F.softmax_cross_entropy(logits, t, reduce='no', enable_double_backprop=True)


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


def sigmoid_cross_entropy_loss(model, x, t):
    """Per-example sigmoid cross-entropy summed over the outputs, shape (B,): for logits f (B, C)
    and labels t in {0, 1} of the same shape (or (B,) with one output; -1: ignored),
    sum_c softplus(f_c) - t_c f_c. Twice differentiable."""
    y = unwrap_model(model)(x)
    y = F.reshape(y, (y.shape[0], -1))
    t = (t.array if isinstance(t, chainer.Variable) else t).reshape(y.shape)
    keep = (t != -1).astype(y.dtype)
    return F.sum((F.softplus(y) - y * t.astype(y.dtype)) * keep, axis=1)


def squared_error_loss(model, x, y):
    """Per-example 0.5 ||f(x) - y||^2, shape (B,); y of the outputs' shape."""
    out = unwrap_model(model)(x)
    out = F.reshape(out, (out.shape[0], -1))
    y = (y.array if isinstance(y, chainer.Variable) else y).reshape(out.shape)
    diff = out - y.astype(out.dtype)
    return 0.5 * F.sum(diff * diff, axis=1)


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
