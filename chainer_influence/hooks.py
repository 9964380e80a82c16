"""Per-example gradients through a ``chainer.FunctionHook``.

The per-example losses of a batch are back-propagated once (their sum). For every function that
receives a tracked parameter, a rule turns the function's retained inputs and its output gradient
``gy`` (B, ...) into the B per-example gradients of that parameter, or, in contract mode, into their
dot products with K given vectors, (B, K), without building the (B, P) gradients.
See :mod:`chainer_influence.gradient_rules` for the rules.
"""
import contextlib
import itertools
import threading
import warnings

import chainer
import chainer.functions as F
from chainer.functions.array.reshape import Reshape
from chainer.functions.connection.deconvolution_2d import Deconvolution2DFunction
from chainer.functions.normalization import batch_normalization

from chainer_influence import gradient_rules
from chainer_influence.parameters import ParameterSpace


class BatchCouplingError(RuntimeError):
    """A function mixes the examples of a batch (e.g. BatchNormalization in train mode)."""


class GradientCheckError(RuntimeError):
    """Per-example gradients do not add up to the batch gradient."""


_COUPLING_FUNCTIONS = (batch_normalization.BatchNormalization,)

_instance_numbers = itertools.count()
_backward_owner = threading.local()  # the hook whose backward pass is running, if any


@contextlib.contextmanager
def exclusive_backward(owner=None):
    """Within this context, only ``owner`` (a :class:`PerSampleGradientHook`, or None: no hook)
    records anything: the library's internal passes never reach a user's active hook."""
    previous = getattr(_backward_owner, 'hook', None)
    _backward_owner.hook = owner if owner is not None else _NO_HOOK
    try:
        yield
    finally:
        _backward_owner.hook = previous


_NO_HOOK = object()


def check_not_coupling(function):
    """Raise :class:`BatchCouplingError` when ``function`` mixes the examples of a batch."""
    if isinstance(function, _COUPLING_FUNCTIONS):
        raise BatchCouplingError(
            '{} in train mode couples the examples of a batch, so per-example gradients and '
            'influence are undefined. Compute under chainer.using_config(\'train\', False) '
            '(BatchNormalization then uses its running statistics).'.format(
                type(function).__name__))


def fix_deconvolution_cover_all(function, in_data):
    """Work around Chainer 7.8.1's crash in ``Deconvolution2DFunction.backward``.

    When only W needs a gradient and ``outsize`` was not given, Chainer calls ``_set_cover_all``
    with Variables instead of shapes. Setting ``cover_all`` from the input shapes beforehand avoids it.
    """
    if isinstance(function, Deconvolution2DFunction) and function.cover_all is None:
        function._set_cover_all(in_data[0].shape, in_data[1].shape)


def check_per_example_losses(losses):
    """Raise unless ``losses`` is a chainer.Variable of per-example losses (B,)."""
    if not isinstance(losses, chainer.Variable):
        raise TypeError('losses must be a chainer.Variable, got {}'.format(type(losses)))
    if losses.ndim != 1:
        raise ValueError(
            'the loss function must return per-example losses of shape (B,), got shape {}: '
            'reduce every axis but the batch axis (e.g. reduce=\'no\' for a mean loss, then '
            'F.mean(..., axis=1) for a (B, 1) sigmoid output)'.format(losses.shape))


def tracked_name(node, name_of):
    """The tracked parameter behind a function's input ``node``, directly or through reshapes, as
    ``name_of[id(parameter)]``; else None."""
    while True:
        var = node.get_variable_or_none()
        if var is not None and id(var) in name_of:
            return name_of[id(var)]
        creator = node.creator_node
        if not isinstance(creator, Reshape):
            return None
        node = creator.inputs[0]


class PerExampleFunctionHook(chainer.FunctionHook):
    """Base of the hooks that read per-example quantities off a backward pass: a unique name per
    instance; records only in the passes it owns (or in plain passes, see
    :func:`exclusive_backward`); refuses functions that couple the examples of a batch and works
    around the deconvolution crash."""

    def __init__(self):
        self.name = '{}-{}'.format(type(self).__name__, next(_instance_numbers))

    def _active(self):
        """``self`` as a context manager, or a no-op one when it is already registered."""
        if chainer.get_function_hooks().get(self.name) is self:
            return contextlib.nullcontext()
        return self

    def _ignores_this_pass(self):
        owner = getattr(_backward_owner, 'hook', None)
        return owner is not None and owner is not self

    def forward_postprocess(self, function, in_data):
        if not self._ignores_this_pass():
            check_not_coupling(function)

    def backward_preprocess(self, function, in_data, out_grad):
        if not self._ignores_this_pass():
            check_not_coupling(function)
            fix_deconvolution_cover_all(function, in_data)


class PerSampleGradientHook(PerExampleFunctionHook):
    """Records per-example gradients of the tracked parameters during a backward pass.

    Usage::

        hook = PerSampleGradientHook(model)
        with hook:
            losses = loss_fn(model, x, t)        # (B,) per-example losses
            hook.backward(losses)
        hook.gradients                          # {name: (B, *param.shape)}

        hook.contract_with(V)                    # V: (K, P) flat vectors
        with hook:
            hook.backward(loss_fn(model, x, t))
        hook.contractions                        # (B, K): <grad L(z_b), V_k>

    ``backward`` back-propagates ``sum(losses)`` with ``chainer.grad`` (the parameters' ``.grad``
    are left untouched) and checks that the per-example results add up to the batch gradient.

    The ordinary idiom also works::

        model.cleargrads()
        with hook:
            loss = model(x, t)                   # e.g. an L.Classifier's mean loss
            loss.backward()
        hook.gradients                          # rows add up to each param.grad

    Row b is then example b's contribution to the gradient of the loss that was back-propagated
    (for a mean over the batch, grad L(z_b) / B). The batch size is the leading axis of the output
    gradient of the first function that receives a tracked parameter (pass ``batch_size`` when a
    model folds other axes into the batch axis); each ``with`` block starts afresh and gradients
    add up over several backward calls inside it, as ``.grad`` does. That idiom skips the check
    against the batch gradient that :meth:`backward` makes.

    Each instance registers under its own name, so several can be active at once, and while one
    instance runs :meth:`backward` (as the library does internally) the others record nothing.

    Args:
        model (chainer.Link): a plain Link or an ``L.Classifier`` (its predictor is used).
        params (list of str or None): names as ``namedparams()`` gives them; None tracks all.
        batch_size (int or None): the batch size of plain ``loss.backward()`` passes; None infers it.
    """

    def __init__(self, model, params=None, batch_size=None):
        super().__init__()
        self.space = ParameterSpace(model, params)
        self._name_of = {id(p): name for name, p in zip(self.space.names, self.space.params)}
        self._vectors = None
        self._warned = set()
        self._given_batch_size = batch_size
        self.gradients = None
        self.contractions = None
        self._batch_size = None

    def contract_with(self, V):
        """Switch to contract mode with V (K, P) on the model's device; None: gradient mode."""
        if V is None:
            self._vectors = None
            return
        if V.ndim != 2 or V.shape[1] != self.space.size:
            raise ValueError('V must have shape (K, P={}), got {}'.format(
                self.space.size, V.shape))
        # contiguous per parameter: views of V's column blocks would be copied in every batch
        xp = chainer.backend.get_array_module(V)
        self._vectors = {name: xp.ascontiguousarray(v)
                         for name, v in self.space.unflatten(V).items()}

    # ---- the backward pass -------------------------------------------------------------
    def backward(self, losses):
        """Back-propagate ``sum(losses)`` for per-example losses (B,) with this hook active."""
        check_per_example_losses(losses)
        with self._active(), exclusive_backward(self):
            self._start(losses.shape[0], losses.dtype)
            batch_grads = chainer.grad([F.sum(losses)], self.space.params)
        xp = chainer.backend.get_array_module(losses.array)
        batch_grads = [xp.zeros_like(p.array) if g is None else g.array
                       for p, g in zip(self.space.params, batch_grads)]
        self._check_sums(batch_grads)
        self._fill_missing()
        return self

    def _start(self, batch_size, dtype):
        """Forget earlier results; allocate for ``batch_size`` examples (None: not known yet)."""
        self._batch_size = batch_size
        self.gradients = {}
        self.contractions = None
        if batch_size is not None and dtype is not None and self._vectors is not None:
            K = next(iter(self._vectors.values())).shape[0]
            self.contractions = self.space.xp.zeros((batch_size, K), dtype=dtype)

    def _fill_missing(self):
        """Zero gradients for the tracked parameters the loss does not reach."""
        if self._vectors is None and self._batch_size is not None:
            for name, p in zip(self.space.names, self.space.params):
                if name not in self.gradients:
                    self.gradients[name] = self.space.xp.zeros(
                        (self._batch_size,) + p.shape, dtype=p.dtype)

    def _check_sums(self, batch_grads):
        """Per-example results must add up to the batch gradient, or the rules missed a path."""
        xp = chainer.backend.get_array_module(batch_grads[0])
        if self._vectors is None:
            for name, full in zip(self.space.names, batch_grads):
                per = self.gradients.get(name)
                summed = xp.zeros_like(full) if per is None else per.sum(axis=0)
                scale = float(xp.abs(full).sum()) + (0.0 if per is None else float(xp.abs(per).sum()))
                if float(xp.abs(summed - full).sum()) > 1e-4 * scale + 1e-30:
                    raise GradientCheckError(
                        'per-example gradients of {} do not add up to the batch gradient: the '
                        'parameter reaches the loss through a path this hook does not understand. '
                        'Please report the model.'.format(name))
            return
        expected = sum(full.reshape(1, -1) @ self._vectors[name].reshape(
            self._vectors[name].shape[0], -1).T for name, full in zip(self.space.names, batch_grads))
        summed = self.contractions.sum(axis=0)
        scale = xp.abs(self.contractions).sum(axis=0) + xp.abs(expected[0])
        if bool(xp.any(xp.abs(summed - expected[0]) > 1e-4 * scale + 1e-30)):
            raise GradientCheckError(
                'per-example gradient contractions do not add up to the batch gradient: a '
                'parameter reaches the loss through a path this hook does not understand.')

    # ---- FunctionHook callbacks ----------------------------------------------------------
    def added(self, function):
        if function is None:  # entering ``with hook:``: a plain backward starts afresh
            self._start(self._given_batch_size, None)

    def deleted(self, function):
        if function is None:
            self._fill_missing()

    def backward_postprocess(self, function, in_data, out_grad):
        if self._ignores_this_pass():
            return
        for index, node in enumerate(function.inputs):
            name = self._tracked_name(node)
            if name is None or isinstance(function, Reshape):
                continue  # a reshape of a parameter is handled where its result is consumed
            self._plain_backward_batch(function, out_grad)
            rule = gradient_rules.rule_for(function, index)
            if rule is None:
                rule = gradient_rules.PerExampleFallback()
                self._warn_fallback(function)
            args = (function, in_data, out_grad, index, self._batch_size)
            param = self.space.params[self.space.index(name)]
            if self._vectors is None:
                g = rule.gradient(*args).reshape((self._batch_size,) + param.shape)
                if name in self.gradients:
                    self.gradients[name] = self.gradients[name] + g
                else:
                    self.gradients[name] = g
            else:
                V = self._vectors[name]
                V = V.reshape((V.shape[0],) + node.shape)
                self.contractions += rule.contract(*args, V)

    def _plain_backward_batch(self, function, out_grad):
        """In a plain ``loss.backward()``, take B from the first output gradient seen."""
        gy = next((g for g in out_grad if g is not None), None)
        if self._batch_size is None:
            if gy is None or gy.ndim == 0:
                raise ValueError(
                    '{} receives a tracked parameter but its output gradient has no batch axis; '
                    'pass batch_size= to PerSampleGradientHook or use hook.backward(losses) with '
                    'per-example losses (B,)'.format(type(function).__name__))
            self._batch_size = gy.shape[0]
        if self._vectors is not None and self.contractions is None:
            K = next(iter(self._vectors.values())).shape[0]
            self.contractions = self.space.xp.zeros((self._batch_size, K), dtype=gy.dtype)

    def _tracked_name(self, node):
        return tracked_name(node, self._name_of)

    def _warn_fallback(self, function):
        kind = type(function).__name__
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(
                'PerSampleGradientHook has no vectorised rule for {}; using the per-example '
                'fallback (one backward of this function per example, slower).'.format(kind),
                gradient_rules.FallbackWarning)


def record_eval_backward(hook, model, loss_fn, batch):
    """Run ``hook.backward`` on ``loss_fn(model, *batch)`` under ``train=False`` (how the library's
    scoring passes see a model: BatchNormalization with its running statistics)."""
    with chainer.using_config('train', False), hook:
        hook.backward(loss_fn(model, *batch))


def per_sample_gradients(model, loss_fn, batch, params=None, flat=False):
    """Per-example gradients of ``loss_fn(model, *batch)`` (B,) for the tracked parameters.

    Returns ``{name: (B, *param.shape)}`` with names as ``model.namedparams()`` gives them (after
    unwrapping an ``L.Classifier``), or with ``flat=True`` a (B, P) array in that order.
    """
    hook = PerSampleGradientHook(model, params)
    with hook:
        losses = loss_fn(model, *batch)
        hook.backward(losses)
    if flat:
        return hook.space.flatten(hook.gradients, lead_shape=(losses.shape[0],))
    return hook.gradients
