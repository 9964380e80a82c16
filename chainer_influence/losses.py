"""Per-example losses: each function returns a Variable of shape (B,)."""
import chainer.functions as F

from chainer_influence.parameters import unwrap_model


def softmax_cross_entropy_loss(model, x, t):
    """Per-example softmax cross-entropy, shape (B,), twice differentiable.

    ``model`` is a plain Link (x -> logits) or an ``L.Classifier`` (its ``.predictor`` is used).
    """
    logits = unwrap_model(model)(x)
    return F.softmax_cross_entropy(logits, t, reduce='no', enable_double_backprop=True)
