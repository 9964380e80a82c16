"""TracIn (Pruthi et al. 2020): influence traced through the training run.

TracInCP sums, over checkpoints k of training, the step size times the dot product of gradients::

    TracInCP(z_test, z_i) = sum_k lr_k * grad L(z_test; theta_k) . grad L(z_i; theta_k)

A gradient step on z_i changes the test loss by about ``-lr_k * grad L(z_test) . grad L(z_i)``,
so TracInCP > 0 means z_i lowered the test loss. This library reports ``score = -TracInCP`` to keep
the sign convention of influence functions: **negative = helpful, positive = harmful**.

One checkpoint costs one backward pass over the M test points and one batched backward pass over
the training set in which the per-example gradient hook contracts every training example's
gradient with the M test gradients (no checkpoint files, no (N, P) array).
"""
import numpy

import chainer

from chainer_influence.batches import dataset_length, iterate_batches
from chainer_influence.hooks import PerSampleGradientHook, record_eval_backward
from chainer_influence.progress import Progress
from chainer_influence.devices import to_host


def learning_rate(optimizer):
    """The current step size of a Chainer optimizer, as a float.

    * ``lr`` for the optimizers that have one (SGD, MomentumSGD, NesterovAG, CorrectedMomentumSGD,
      RMSprop, AdaGrad, MSVAG, ...), so ``ExponentialShift('lr', ...)`` and similar schedules are
      seen;
    * ``eta * alpha_t`` for Adam and its variants (AdamW, AMSGrad, AdaBound), ``alpha_t`` being
      Adam's bias-corrected step. This is an approximation: Adam preconditions each coordinate by
      1 / (sqrt(v) + eps), which TracIn's plain dot product ignores (Pruthi et al. do the same).

    Raises ``ValueError`` for an optimizer without either (e.g. AdaDelta): pass ``lr=`` instead.
    """
    if is_adam_like(optimizer):
        if optimizer.t == 0:
            raise ValueError('Adam has taken no step yet, so its step size alpha_t is undefined: '
                             'trigger TracIn after the first update')
        return float(getattr(optimizer, 'eta', 1.0)) * float(optimizer.alpha_t)
    lr = getattr(getattr(optimizer, 'hyperparam', None), 'lr', None)
    if lr is None:
        raise ValueError('cannot read a learning rate from {}: it has neither lr nor alpha_t; '
                         'pass lr=... to TracInExtension'.format(type(optimizer).__name__))
    return float(lr)


def is_adam_like(optimizer):
    """Whether the optimizer's step size is Adam's ``alpha_t`` (a property of its class)."""
    return isinstance(getattr(type(optimizer), 'alpha_t', None), property)


def gradient_dots(model, loss_fn, train, test_batch, params=None, batch_size=256,
                  progress=True):
    """(M, N) float64: ``grad L(z_test_m) . grad L(z_i)`` at the model's current parameters.

    Args:
        model: the model (an ``L.Classifier`` is unwrapped by the loss and the hook).
        loss_fn: ``loss_fn(model, *batch)`` -> per-example losses (B,).
        train: the training set (Chainer dataset of tuples or a tuple of arrays).
        test_batch: the M test points as a tuple of arrays on the model's device.
        params (list of str): tracked parameter names; None: all.
        batch_size (int): training examples per backward pass.
        progress (bool): a progress bar on a terminal.

    Runs under ``chainer.using_config('train', False)``; parameters and ``.grad`` are untouched.
    """
    hook = PerSampleGradientHook(model, params)
    m = len(test_batch[0])
    record_eval_backward(hook, model, loss_fn, test_batch)
    test_gradients = hook.space.flatten(hook.gradients, lead_shape=(m,))  # (M, P)
    if not bool(hook.space.xp.isfinite(test_gradients).all()):
        raise FloatingPointError('non-finite test gradients: check the model and the test points')
    hook.contract_with(test_gradients)
    device = chainer.backend.get_device_from_array(hook.space.params[0].array)
    n = dataset_length(train, 'training set')
    dots = numpy.empty((m, n), dtype=numpy.float64)
    with Progress(n, 'TracIn', enabled=progress) as bar:
        for begin, end, batch in iterate_batches(train, batch_size, device):
            record_eval_backward(hook, model, loss_fn, batch)
            dots[:, begin:end] = to_host(hook.contractions).T
            bar.update(end - begin)
    return dots


class TracInScores(object):
    """The running TracIn sum over checkpoints, in the library's sign convention.

    ``scores`` (M, N) float64 = ``-sum_k lr_k * grad L(z_test) . grad L(z_i)`` over the checkpoints
    added so far (None before the first); ``learning_rates`` and ``iterations`` list them.
    Serialisable (``serialize``), so the sum survives a trainer snapshot and resumes.
    """

    def __init__(self):
        self.scores = None
        self.learning_rates = []
        self.iterations = []

    def add(self, dots, lr, iteration):
        """Add one checkpoint: ``dots`` (M, N) gradient dot products taken with step size ``lr``."""
        dots = numpy.asarray(dots, dtype=numpy.float64)
        if self.scores is not None and self.scores.shape != dots.shape:
            raise ValueError('TracIn checkpoint of shape {} does not match the running sum {}: '
                             'the test points or the training set changed'.format(
                                 dots.shape, self.scores.shape))
        step = -float(lr) * dots
        self.scores = step if self.scores is None else self.scores + step
        self.learning_rates.append(float(lr))
        self.iterations.append(int(iteration))

    def serialize(self, serializer):
        if not isinstance(serializer, chainer.serializer.Deserializer):
            serializer('scores', numpy.zeros((0, 0)) if self.scores is None else self.scores)
            serializer('learning_rates', numpy.asarray(self.learning_rates, numpy.float64))
            serializer('iterations', numpy.asarray(self.iterations, numpy.int64))
            return
        try:  # value None: the stored array comes back whatever its shape
            scores = serializer('scores', None)
            lrs = serializer('learning_rates', None)
            iterations = serializer('iterations', None)
        except KeyError:  # a snapshot taken before this extension was added: start afresh
            return
        if scores is None:  # a non-strict deserializer without our keys
            return
        scores = numpy.asarray(scores, dtype=numpy.float64)
        self.scores = scores if scores.size else None
        self.learning_rates = [float(v) for v in numpy.asarray(lrs).ravel()]
        self.iterations = [int(v) for v in numpy.asarray(iterations).ravel()]
