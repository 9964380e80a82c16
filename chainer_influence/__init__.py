"""Influence functions (Koh & Liang 2017) for Chainer."""
from chainer_influence.losses import softmax_cross_entropy_loss  # NOQA
from chainer_influence.parameters import ParameterSpace  # NOQA
