"""Training-set attack by perturbation influence (Koh & Liang 2017, Sec. 5.2): the machinery.

The model is a frozen feature extractor phi (pixels -> features) under a convex top layer (a
linear softmax classifier) that is retrained to convergence by L-BFGS, as in the paper (Inception
features + logistic regression). Only the top is retrained, so retraining is exact and
deterministic: R(theta) is strictly convex (weight decay > 0) and L-BFGS reaches its unique
minimiser whatever the (warm) start.

Signs. ``InfluenceFunctions.perturbation_influence`` returns I_pert,loss(z_test, z_i) =
-grad_x [grad L(z_test)^T H^-1 grad_theta L(z_i)], H the Hessian of
R = (1/N) sum_i L + wd/2 |theta|^2.
Replacing x_i by x_i + delta moves the optimum by -(1/N) H^-1 grad_x grad_theta L(z_i) delta, so the
target's test loss changes by about ``(1/N) <I_pert,loss, delta>``: the L-infinity step that raises
it most is ``delta = +epsilon * sign(I_pert,loss)`` and gains ``(epsilon / N) |I_pert,loss|_1``.

Pixels vs features. The solves run on the top layer over cached features (cheap: P is the top's
size); the pixel-space I_pert,loss is the chain rule J_phi(x_i)^T I_pert,loss(features), one
backward pass through phi.
"""
import numpy

import chainer
import chainer.functions as F

import chainer_influence as ci
from chainer_influence.devices import to_host
from chainer_influence.validation import LBFGSRetrainer, per_example_losses

LOSS = ci.softmax_cross_entropy_loss


def extract_features(extractor, x, batch_size=1024):
    """phi(x) for pixels x (N, D) as a host array (N, h), in test mode without a graph."""
    device = _device_of(extractor)
    out = []
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        for begin in range(0, len(x), batch_size):
            phi = _features(extractor, device.send(x[begin:begin + batch_size]))
            out.append(to_host(phi.array))
    return numpy.concatenate(out)


def pixel_chain_rule(extractor, x, feature_gradients):
    """J_phi(x_k)^T g_k for pixels x (K, D) and feature-space vectors g (K, h): (K, D) on host.

    One backward pass: grad_x sum_k <phi(x_k), g_k> (the examples do not interact in phi).
    """
    device = _device_of(extractor)
    x = chainer.Variable(device.send(x))
    with chainer.using_config('train', False), chainer.using_config('enable_backprop', True):
        phi = _features(extractor, x)
        gx, = chainer.grad([F.sum(phi * device.send(feature_gradients))], [x])
    return to_host(gx.array)


def margins(top, features, labels):
    """Logit of the labelled class minus the other logit (binary task), (M,) host float64:
    positive = correctly classified."""
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        logits = to_host(top(top.xp.asarray(features)).array, numpy.float64)
    rows = numpy.arange(len(labels))
    labels = numpy.asarray(labels)
    return logits[rows, labels] - logits[rows, 1 - labels]


class TrainingSetAttack(object):
    """Iterated, projected signed-gradient attack on training inputs (Koh & Liang 2017, Sec. 5.2).

    Args:
        extractor: frozen feature map, a Link or a callable x (B, D) -> (B, h); None: the
            identity (a model on raw pixels).
        top (L.Linear): the convex top, fitted to convergence on ``extractor(x_train)``.
        x_train (N, D), t_train (N,): training pixels in [0, 1] (float64) and labels {0, 1}.
        weight_decay (float): the L2 term of the top's objective (``WeightDecay(rate)``).
        epsilon (float): L-infinity bound of each perturbation, in pixel units of [0, 1].
        step_size (float): size of each signed-gradient step (pixel units).
        max_steps (int): steps (each followed by an exact retraining) per attack at most.
        solver_factory: () -> a solver for (H + damping I)^-1 V on the top; default CG.
        gtol (float): L-BFGS stops at max |gradient of R| below this.

    The clean data and the clean top are never modified; each attack works on copies.
    """

    def __init__(self, extractor, top, x_train, t_train, weight_decay, epsilon, step_size,
                 max_steps, solver_factory=None, gtol=1e-9):
        self.extractor = extractor
        self.top = top
        self.x_train = numpy.asarray(x_train)
        self.t_train = numpy.asarray(t_train, dtype=numpy.int32)
        self.features = extract_features(extractor, self.x_train)
        self.weight_decay = weight_decay
        self.epsilon = float(epsilon)
        self.step_size = float(step_size)
        self.max_steps = int(max_steps)
        self.solver_factory = solver_factory or (lambda: ci.CGSolver(
            max_iter=1000, tol=1e-10, progress=False))
        self.retrain = LBFGSRetrainer(LOSS, weight_decay, gtol=gtol, max_iter=10000)

    @property
    def n_train(self):
        return len(self.x_train)

    def influence_functions(self, top, features):
        """``InfluenceFunctions`` of ``top`` over training features (N, h)."""
        return ci.InfluenceFunctions(
            top, (top.xp.asarray(features), top.xp.asarray(self.t_train)), LOSS,
            solver=self.solver_factory(), weight_decay=self.weight_decay,
            batch_size=len(features), progress=False)  # the top is small: one batch per HVP

    def pixel_influence(self, x_test, t_test, indices, top=None, x_train=None, features=None):
        """(K, D) pixel-space I_pert,loss of the one target (x_test (D,), t_test) for the training
        examples at ``indices``, at ``top`` fitted on (``x_train``, ``features``) (default: the
        clean ones). ``(1 / N) <I_pert, delta>`` predicts the change of the target's test loss.
        """
        top = self.top if top is None else top
        x_train = self.x_train if x_train is None else x_train
        features = self.features if features is None else features
        indices = numpy.asarray(indices)
        calc = self.influence_functions(top, features)
        target = self._target(x_test, t_test, top)
        feature_influence = calc.perturbation_influence(target, indices)[0]
        return pixel_chain_rule(self.extractor, x_train[indices], feature_influence)

    def rank(self, x_test, t_test):
        """Training indices (N,) by decreasing first-order gain of an L-infinity step,
        |I_pert,loss|_1, for the target (one pass over the training set)."""
        gain = numpy.abs(self.pixel_influence(x_test, t_test, numpy.arange(self.n_train)))
        return numpy.argsort(-gain.reshape(self.n_train, -1).sum(axis=1), kind='stable')

    def retrained(self, x_train, indices, top=None):
        """(top, features) refitted after the training images at ``indices`` were replaced by
        ``x_train[indices]``; warm start from ``top`` (default: the clean top)."""
        features = self.features.copy()
        features[indices] = extract_features(self.extractor, x_train[indices])
        refit = (self.top if top is None else top).copy(mode='copy')
        self.retrain(refit, (refit.xp.asarray(features), refit.xp.asarray(self.t_train)),
                     numpy.ones(self.n_train))
        return refit, features

    def target_loss(self, top, x_test, t_test):
        """The target's test loss L(z_test; top), a float."""
        return float(per_example_losses(top, LOSS, self._target(x_test, t_test, top))[0])

    def attack(self, x_test, t_test, indices):
        """Perturb the training images at ``indices`` to flip the prediction on the target.

        Each step: pixel I_pert,loss at the current (retrained) top, x_k += step_size *
        sign(I_pert,loss), projection onto the L-infinity ball of radius epsilon around the clean
        image and onto [0, 1], exact retraining. Stops when the target is misclassified, after
        ``max_steps`` steps, or when a step no longer moves any pixel (a corner of the box).

        Returns a dict: ``success``, ``steps``, ``indices``, ``x`` (K, D) the perturbed images,
        ``losses`` and ``margins`` of the target (clean first, then after every step),
        ``predicted_changes`` (first-order (1/N) <I_pert, delta> of every step), ``top`` the
        final retrained top, ``linf`` the largest |perturbation|.
        """
        indices = numpy.asarray(indices)
        x_train = self.x_train.copy()
        low = numpy.maximum(self.x_train[indices] - self.epsilon, 0.0)
        high = numpy.minimum(self.x_train[indices] + self.epsilon, 1.0)
        top, features = self.top, self.features
        losses = [self.target_loss(top, x_test, t_test)]
        target_margins = [self._margin(top, x_test, t_test)]
        predicted = []
        for _ in range(self.max_steps):
            influence = self.pixel_influence(x_test, t_test, indices, top, x_train, features)
            moved = numpy.clip(x_train[indices] + self.step_size * numpy.sign(influence),
                               low, high)
            if (moved == x_train[indices]).all():
                break  # stuck in a corner of the box: retraining would give the same model
            predicted.append(float((influence * (moved - x_train[indices])).sum()) / self.n_train)
            x_train[indices] = moved
            top, features = self.retrained(x_train, indices, top)
            losses.append(self.target_loss(top, x_test, t_test))
            target_margins.append(self._margin(top, x_test, t_test))
            if target_margins[-1] < 0:
                break
        return {'success': bool(target_margins[-1] < 0), 'steps': len(predicted),
                'indices': indices, 'x': x_train[indices],
                'losses': losses, 'margins': target_margins, 'predicted_changes': predicted,
                'top': top,
                'linf': float(numpy.abs(x_train[indices] - self.x_train[indices]).max())}

    def _target(self, x_test, t_test, top):
        features = extract_features(self.extractor, numpy.asarray(x_test)[None])
        return (top.xp.asarray(features), top.xp.asarray(numpy.array([t_test], numpy.int32)))

    def _margin(self, top, x_test, t_test):
        return float(margins(top, extract_features(self.extractor, numpy.asarray(x_test)[None]),
                             [t_test])[0])


def _features(extractor, x):
    """phi(x) as a Variable."""
    return chainer.as_variable(x) if extractor is None else extractor(x)


def _device_of(extractor):
    params = list(extractor.params()) if isinstance(extractor, chainer.Link) else []
    if params:
        return chainer.backend.get_device_from_array(params[0].array)
    return chainer.get_device('@numpy')
