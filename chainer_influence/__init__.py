"""Influence functions (Koh & Liang 2017) for Chainer."""
from chainer_influence.losses import softmax_cross_entropy_loss  # NOQA
from chainer_influence.parameters import ParameterSpace  # NOQA
from chainer_influence.hooks import BatchCouplingError  # NOQA
from chainer_influence.hooks import GradientCheckError  # NOQA
from chainer_influence.hooks import PerSampleGradientHook  # NOQA
from chainer_influence.hooks import per_sample_gradients  # NOQA
from chainer_influence.gradient_rules import FallbackWarning  # NOQA
