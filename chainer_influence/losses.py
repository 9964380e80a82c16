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
