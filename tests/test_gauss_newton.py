"""Gauss-Newton curvature against an independent computation from per-example Jacobians.

G = (1/N) sum_i J_i^T H_out,i J_i + weight_decay I, with J_i (C, P) built by one backward per
output per example and H_out,i in closed form in numpy (softmax: diag(p) - p p^T; sigmoid:
diag(p (1 - p)); squared error: I).
"""
import numpy
import pytest

import chainer
import chainer.functions as F

import chainer_influence as ci
from chainer_influence.curvature import Curvature
from chainer_influence.retraining import fit_lbfgs

from digits_models import TinyMLP, digits

WD = 1e-3


def sigmoid(z):
    return 1 / (1 + numpy.exp(-z))


def softmax(z):
    e = numpy.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def closed_form(loss_name, z, t):
    """(per-example losses (B,), output Hessians (B, C, C)) in numpy."""
    if loss_name == 'softmax':
        p = softmax(z)
        return (-numpy.log(p[numpy.arange(len(z)), t]),
                p[:, :, None] * numpy.eye(z.shape[1]) - p[:, :, None] * p[:, None, :])
    if loss_name == 'sigmoid':
        p = sigmoid(z)
        losses = -(t * numpy.log(p) + (1 - t) * numpy.log(1 - p)).sum(axis=1)
        return losses, (p * (1 - p))[:, :, None] * numpy.eye(z.shape[1])
    return 0.5 * ((z - t) ** 2).sum(axis=1), numpy.broadcast_to(numpy.eye(z.shape[1]),
                                                               (len(z),) + (z.shape[1],) * 2)


LOSSES = {'softmax': ci.softmax_cross_entropy_loss, 'sigmoid': ci.sigmoid_cross_entropy_loss,
          'squared': ci.squared_error_loss}


def problem(loss_name, n=40, n_hidden=4):
    """A random float64 tanh MLP (64-n_hidden-10) on digits with targets for ``loss_name``."""
    (x, t), _ = digits(n, 1)
    numpy.random.seed(0)  # Chainer's initializers
    with chainer.using_config('dtype', numpy.float64):
        model = TinyMLP(64, n_hidden, 10)
    model(x[:1])
    rng = numpy.random.RandomState(1)
    if loss_name == 'sigmoid':
        t = (rng.uniform(size=(n, 10)) < 0.3).astype(numpy.int32)
    elif loss_name == 'squared':
        t = rng.standard_normal((n, 10))
    return model, (x, t)


def jacobians(model, x):
    """(N, C, P) Jacobians of the outputs, one backward per output per example."""
    space = ci.ParameterSpace(model)
    rows = []
    for i in range(len(x)):
        y = model(x[i:i + 1])
        per_output = []
        for c in range(y.shape[1]):
            grads = chainer.grad([y[0, c]], space.params)
            per_output.append(space.flatten([g.array for g in grads]))
        rows.append(numpy.stack(per_output))
    return numpy.stack(rows)


def reference_ggn(model, loss_name, train):
    x, t = train
    J = jacobians(model, x)
    with chainer.no_backprop_mode():
        z = model(x).array
    _, H_out = closed_form(loss_name, z, t)
    G = numpy.einsum('ncp,ncd,ndq->pq', J, H_out, J) / len(x)
    return G + WD * numpy.eye(len(G))


def relative_error(a, b):
    return numpy.linalg.norm(a - b) / numpy.linalg.norm(b)


@pytest.mark.parametrize('loss_name', sorted(LOSSES))
def test_ggn_products_and_dense_matrix_match_jacobians(loss_name):
    model, train = problem(loss_name)
    loss_fn = LOSSES[loss_name]
    # the loss objects compute the losses and output Hessians of the closed forms
    z = model(train[0]).array
    want_losses, want_H = closed_form(loss_name, z, train[1])
    numpy.testing.assert_allclose(loss_fn(model, *train).array, want_losses, rtol=1e-10)
    R = loss_fn.output_hessian_sqrt(z, *train)
    numpy.testing.assert_allclose(numpy.matmul(R, R.transpose(0, 2, 1)), want_H, atol=1e-12)
    U = numpy.random.RandomState(2).standard_normal(z.shape)
    numpy.testing.assert_allclose(loss_fn.output_hessian_product(z, U, *train),
                                  numpy.einsum('bcd,bd->bc', want_H, U), atol=1e-12)

    G = reference_ggn(model, loss_name, train)
    curvature = Curvature(model, loss_fn, train, weight_decay=WD, batch_size=16,
                          curvature='gauss-newton')  # three batches, weighted by their size
    V = numpy.random.RandomState(3).standard_normal((3, curvature.space.size))
    assert relative_error(curvature.hvp(V), V.dot(G)) <= 1e-5
    curvature.batch_size = len(train[0])
    dense = curvature.dense_matrix()
    assert relative_error(dense, G) <= 1e-5
    eigenvalues = numpy.linalg.eigvalsh(dense)
    assert eigenvalues.min() >= WD * (1 - 1e-6)  # PSD + weight decay


@pytest.mark.parametrize('loss_name', ['softmax', 'sigmoid'])
def test_sampled_output_gradients_have_the_output_hessian_as_second_moment(loss_name):
    model, train = problem(loss_name, n=2)
    loss_fn = LOSSES[loss_name]
    z = model(train[0][:1]).array
    batch = tuple(a[[0] * 20000] for a in train)
    zs = numpy.repeat(z, 20000, axis=0)
    g = loss_fn.sample_output_gradients(zs, numpy.random.RandomState(0), *batch)
    moment = g.T.dot(g) / len(g)
    _, H = closed_form(loss_name, z, train[1][:1])
    assert numpy.abs(moment - H[0]).max() < 0.01


def test_gauss_newton_needs_the_output_protocol():
    model, train = problem('softmax')
    with pytest.raises(ci.MissingOutputHessianError, match='output_hessian_sqrt'):
        Curvature(model, ci.smooth_hinge_loss(0.1), train, curvature='gauss-newton')
    with pytest.raises(ValueError, match='curvature must be one of'):
        Curvature(model, ci.softmax_cross_entropy_loss, train, curvature='fisher')


def test_softmax_loss_is_callable_as_before():
    model, (x, t) = problem('softmax', n=5)
    losses = ci.softmax_cross_entropy_loss(model, x, t)
    assert isinstance(losses, chainer.Variable) and losses.shape == (5,)
    want = F.softmax_cross_entropy(model(x), t, reduce='no').array
    numpy.testing.assert_allclose(losses.array, want)
    assert ci.softmax_cross_entropy_loss.__name__ == 'softmax_cross_entropy_loss'


@pytest.fixture(scope='module')
def trained_mlp():
    """A 64-8-10 tanh MLP on 200 digits (weight decay 1e-3), 50 L-BFGS steps: not at a minimum
    (as after SGD training), its Hessian is indefinite (smallest eigenvalue about -2e-3)."""
    (x, t), test = digits(200, 5)
    numpy.random.seed(0)  # Chainer's initializers
    with chainer.using_config('dtype', numpy.float64):
        model = TinyMLP(64, 8, 10)
    model(x[:1])
    fit_lbfgs(model, ci.softmax_cross_entropy_loss, (x, t), WD, gtol=1e-6, max_iter=50)
    return model, (x, t), test


def test_solvers_never_meet_negative_curvature_on_the_gauss_newton(trained_mlp):
    model, train, test = trained_mlp
    hessian = Curvature(model, ci.softmax_cross_entropy_loss, train, weight_decay=WD)
    assert numpy.linalg.eigvalsh(hessian.dense_matrix())[0] < 0  # the Hessian is indefinite
    V = ci.per_sample_gradients(model, ci.softmax_cross_entropy_loss, test, flat=True)
    curvature = Curvature(model, ci.softmax_cross_entropy_loss, train, weight_decay=WD,
                          curvature='gauss-newton')
    exact = ci.ExactSolver().solve(curvature, V, damping=0.0)
    numpy.testing.assert_allclose(curvature.hvp(exact), V, atol=1e-8 * numpy.abs(V).max())
    cg = ci.CGSolver(max_iter=1000, tol=1e-8, progress=False).solve(curvature, V, damping=0.0)
    assert relative_error(cg, exact) < 1e-5
    lissa = ci.LiSSASolver(depth=30, batch_size=32, progress=False)
    estimate = lissa.solve(curvature, V, damping=0.0)  # would raise LiSSADivergenceError
    assert numpy.isfinite(estimate).all()
    assert lissa.diagnostics['norm_trace'].max() < 10 * numpy.linalg.norm(exact)
