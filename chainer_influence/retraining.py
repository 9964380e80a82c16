"""Retraining to convergence, for checking influence against real leave-one-out changes.

The objective is the one influence is defined on (see the design contract), with per-example
weights: R_w(theta) = (1/N) sum_i w_i L(z_i) + weight_decay/2 ||theta||^2. Removing z_j is w_j = 0
(up-weighting by epsilon = -1/N); up-weighting by epsilon is w_j = 1 + N epsilon.
"""
import numpy

import chainer
import chainer.functions as F

from chainer_influence.batches import dataset_length, iterate_batches
from chainer_influence.parameters import ParameterSpace


def objective(model, loss_fn, train, weight_decay=0.0, weights=None, params=None,
              batch_size=1024):
    """(R_w(theta), grad R_w(theta) flat (P,)) at the model's current parameters, on the host."""
    space = ParameterSpace(model, params)
    n = dataset_length(train)
    total, grad = 0.0, numpy.zeros(space.size)
    with chainer.using_config('train', False):
        for begin, end, batch in iterate_batches(train, batch_size):
            losses = loss_fn(model, *batch)
            if weights is not None:
                losses = losses * losses.xp.asarray(weights[begin:end], dtype=losses.dtype)
            batch_loss = F.sum(losses) / n
            grads = chainer.grad([batch_loss], space.params)
            total += float(batch_loss.array)
            grad += chainer.backend.CpuDevice().send(space.flatten(
                [numpy.zeros(p.shape, p.dtype) if g is None else g.array
                 for g, p in zip(grads, space.params)]))
    theta = chainer.backend.CpuDevice().send(space.values()).astype(numpy.float64)
    return total + 0.5 * weight_decay * theta.dot(theta), grad + weight_decay * theta


def fit_lbfgs(model, loss_fn, train, weight_decay=0.0, weights=None, params=None,
              gtol=1e-9, max_iter=2000):
    """Minimise R_w over the tracked parameters with full-batch L-BFGS, starting from the
    model's current values (a warm start); writes the optimum into the model.

    Returns the final gradient norm. Use float64 models for leave-one-out-sized changes.
    """
    import scipy.optimize

    space = ParameterSpace(model, params)

    def f(theta):
        space.set_values(space.xp.asarray(theta, dtype=space.params[0].dtype))
        return objective(model, loss_fn, train, weight_decay, weights, params)

    theta0 = chainer.backend.CpuDevice().send(space.values()).astype(numpy.float64)
    result = scipy.optimize.minimize(f, theta0, jac=True, method='L-BFGS-B',
                                     options={'gtol': gtol, 'ftol': 0.0, 'maxiter': max_iter,
                                              'maxcor': 30})
    space.set_values(space.xp.asarray(result.x, dtype=space.params[0].dtype))
    return float(numpy.abs(objective(model, loss_fn, train, weight_decay, weights, params)[1]).max())
