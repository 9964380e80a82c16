"""What :class:`~chainer_influence.extension.InfluenceExtension` reads from a trainer: the loss the
model was trained on and the weight decay of its optimizer.

Both must be the ones of the training objective R(theta) = (1/N) sum_i L(z_i) + (weight_decay/2)
||theta||^2, or the scores explain a model that was never trained. Where that objective cannot be
read, the functions here raise :class:`TrainingSetupError` (asking for ``loss_fn=``) or return a
note naming what was ignored.
"""
import chainer
import chainer.functions as F
import chainer.links as L
import numpy
from chainer import optimizer_hooks

from chainer_influence import losses
from chainer_influence.curvature import Curvature
from chainer_influence.parameters import unwrap_model


class TrainingSetupError(ValueError):
    """The training objective cannot be read from the trainer; the message says what to pass."""


_ASK_FOR_LOSS = (' Pass loss_fn=: a function loss_fn(model, x, t) -> per-example losses (B,) that '
                 'averages to the trained loss, e.g. ci.softmax_cross_entropy_loss, '
                 'ci.sigmoid_cross_entropy_loss, ci.squared_error_loss or '
                 'ci.smooth_hinge_loss(0.1).')


def trained_loss(model, updater, batch):
    """The per-example loss ``loss_fn(model, *batch)`` -> (B,) whose mean the model was trained on.

    Read from ``L.Classifier.lossfun``: ``F.softmax_cross_entropy``, ``F.sigmoid_cross_entropy``
    and ``F.mean_squared_error`` map to the library's twice-differentiable losses (scaled to the
    trained mean over outputs); another ``lossfun`` that accepts ``reduce='no'`` (e.g. ``F.hinge``)
    is reduced over the non-batch axes by a sum or a mean, whichever reproduces its reduced value on
    ``batch`` (a few training examples as a tuple of arrays (x, ..., t)). Anything else
    (``StandardUpdater(loss_func=...)``, a model that computes its own loss, a ``lossfun`` without
    ``reduce``) raises :class:`TrainingSetupError`.
    """
    if getattr(updater, 'loss_func', None) is not None:
        raise TrainingSetupError(
            'the updater trains with loss_func={}, whose per-example form is unknown.'.format(
                _name(updater.loss_func)) + _ASK_FOR_LOSS)
    if not isinstance(model, L.Classifier):
        raise TrainingSetupError(
            'the optimizer\'s target is a {}, not an L.Classifier, so the loss it computes is '
            'unknown.'.format(type(model).__name__) + _ASK_FOR_LOSS)
    lossfun = model.lossfun
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        y = model.predictor(*batch[:-1])
    per_output = y.size // len(y)
    if lossfun is F.softmax_cross_entropy:
        return losses.softmax_cross_entropy_loss
    if lossfun is F.sigmoid_cross_entropy:  # trained: a mean over all outputs
        return _scaled(losses.sigmoid_cross_entropy_loss, 1.0 / per_output)
    if lossfun is F.mean_squared_error:  # trained: a mean of squares over all outputs
        return _scaled(losses.squared_error_loss, 2.0 / per_output)
    return _reduced_loss(lossfun, y, batch[-1])


def check_twice_differentiable(model, loss_fn, batch, params=None):
    """One Hessian-vector product on ``batch`` (a few examples): raise
    :class:`TrainingSetupError` when Chainer cannot differentiate ``loss_fn`` twice (e.g. an old
    style Function such as ``F.hinge``, or softmax cross-entropy without double backprop)."""
    curvature = Curvature(model, loss_fn, batch, params=params)
    try:
        curvature.hvp(curvature.xp.ones(curvature.space.size, dtype=curvature.dtype))
    except Exception as e:
        raise TrainingSetupError(
            'the loss {} cannot be differentiated twice, which Hessian-vector products need '
            '({}: {}).'.format(_name(loss_fn), type(e).__name__, e) + _ASK_FOR_LOSS) from e


def _scaled(loss_fn, factor):
    return loss_fn if factor == 1.0 else losses.ScaledLoss(loss_fn, factor)


def _reduced_loss(lossfun, y, t):
    """A :class:`~chainer_influence.losses.ReducedLoss` that reproduces ``lossfun(y, t)``."""
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        try:
            per = lossfun(y, t, reduce='no')
        except TypeError:
            raise TrainingSetupError(
                'L.Classifier(lossfun={}) cannot give per-example losses (it takes no '
                'reduce=\'no\').'.format(_name(lossfun)) + _ASK_FOR_LOSS)
        full = float(lossfun(y, t).array)
    per = chainer.backend.CpuDevice().send(per.array).reshape(len(y), -1).astype(numpy.float64)
    for reduction in ('sum', 'mean'):
        if numpy.isclose(getattr(per, reduction)(axis=1).mean(), full, rtol=1e-4, atol=1e-7):
            return losses.ReducedLoss(lossfun, reduction)
    raise TrainingSetupError(
        'the per-example losses of L.Classifier(lossfun={}) with reduce=\'no\' average to '
        'neither its reduced value {:.6g} by a sum nor by a mean over the outputs.'.format(
            _name(lossfun), full) + _ASK_FOR_LOSS)


def _name(function):
    return getattr(function, '__name__', type(function).__name__)


# ---- weight decay -------------------------------------------------------------------------
def _hooks(hookable_owner):
    """The optimizer hooks of an optimizer or update rule. Chainer 7 has no public listing:
    both keep them in ``_hookable``."""
    hookable = getattr(hookable_owner, '_hookable', None)
    if hookable is None:
        return []
    return list(hookable._pre_update_hooks.values()) + list(hookable._post_update_hooks.values())


def _ignored_terms(hook, where):
    if isinstance(hook, optimizer_hooks.Lasso):
        return ['{}Lasso(rate={:g}) (an L1 term has no Hessian)'.format(where, hook.rate)]
    if isinstance(hook, optimizer_hooks.GradientLARS) and hook.weight_decay:
        return ['{}GradientLARS(weight_decay={:g}) (rescaled per layer)'.format(
            where, hook.weight_decay)]
    return []


def weight_decay_of(optimizer, names=None):
    """Read the L2 weight decay that ``optimizer`` applies to each parameter.

    Sums the rates of the ``WeightDecay`` hooks added to the optimizer (every parameter) and to
    each parameter's update rule (``param.update_rule.add_hook``), for the parameters of the
    optimizer's target (an ``L.Classifier`` unwrapped, so names are like ``/l1/W``).

    Returns ``(weight_decay, ignored)``: ``weight_decay`` is a float when every parameter in
    ``names`` (None: all) has the same rate, else a dict ``{name: rate}``; ``ignored`` lists what
    changes the trained objective but is not an L2 term of it: ``Lasso`` (L1),
    ``GradientLARS``'s weight decay, and a decoupled ``weight_decay_rate`` (Adam, AdamW, AMSGrad,
    AdaBound, MSVAG). Decoupled decay shrinks theta by lr * rate outside the adaptive step, so its
    fixed point is not a minimum of R + (rate/2) ||theta||^2 for any single rate; pass
    ``weight_decay=`` (and some damping) when you want an L2 term for it.
    """
    global_hooks = _hooks(optimizer)
    global_rate = sum(h.rate for h in global_hooks if isinstance(h, optimizer_hooks.WeightDecay))
    ignored = [term for h in global_hooks for term in _ignored_terms(h, '')]
    rates = {}
    for name, param in unwrap_model(optimizer.target).namedparams():
        if names is not None and name not in names:
            continue
        rule = param.update_rule
        rule_hooks = _hooks(rule)
        rates[name] = float(global_rate + sum(
            h.rate for h in rule_hooks if isinstance(h, optimizer_hooks.WeightDecay)))
        where = '{}: '.format(name)
        ignored += [term for h in rule_hooks for term in _ignored_terms(h, where)]
        decoupled = getattr(getattr(rule, 'hyperparam', None), 'weight_decay_rate', 0)
        if decoupled:
            ignored.append('{} weight_decay_rate={:g} (decoupled)'.format(
                type(optimizer).__name__, decoupled))
    ignored = list(dict.fromkeys(ignored))  # once each, in order
    values = set(rates.values())
    if len(values) <= 1:
        return (values.pop() if values else 0.0), ignored
    return rates, ignored
