"""Curvature and solvers against closed-form numpy Hessians on scikit-learn's digits.

Convex case: multinomial logistic regression W (10, 64), no bias, weight decay 0.01, fitted by
L-BFGS on the exact objective; its Hessian is mean_i kron(diag(p_i) - p_i p_i^T, x_i x_i^T) + wd I
in W's row-major layout. Non-convex case: a 64-4-10 tanh MLP (310 parameters) whose Hessian is
built by central differences of plain first-order gradients.
"""
import gc
import io
import re
import sys

import numpy
import pytest
import scipy.optimize
from sklearn.datasets import load_digits

import chainer
import chainer.functions as F
import chainer.links as L

import chainer_influence as ci

from digits_models import WEIGHT_DECAY, TinyMLP

# Smallest LiSSA depth (batch 32, seed 0, scale='auto') measured to give cosine >= 0.99 for all
# eight right-hand sides below was 200 (cosines 0.991-0.995); 250 leaves a margin.
LISSA_DEPTH = 250


def softmax(z):
    e = numpy.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def logreg_hessian(W, X, weight_decay):
    """Closed-form Hessian (P, P), P = 10 * 64, of mean CE + wd/2 ||W||^2 (W row-major)."""
    p = softmax(X.dot(W.T))
    A = p[:, :, None] * numpy.eye(p.shape[1]) - p[:, :, None] * p[:, None, :]
    H = numpy.einsum('iab,ij,ik->ajbk', A, X, X, optimize=True) / len(X)
    P = W.size
    return H.reshape(P, P) + weight_decay * numpy.eye(P)


def logreg_gradients(W, X, t):
    """Per-example loss gradients (B, P) w.r.t. W, in closed form: (p_i - y_i) x_i^T."""
    residual = softmax(X.dot(W.T)) - numpy.eye(W.shape[0])[t]
    return (residual[:, :, None] * X[:, None, :]).reshape(len(X), -1)


def relative_error(a, b):
    return numpy.linalg.norm(a - b) / numpy.linalg.norm(b)


def cosines(a, b):
    return (a * b).sum(axis=1) / numpy.linalg.norm(a, axis=1) / numpy.linalg.norm(b, axis=1)


@pytest.fixture(scope='module')
def digits_logreg():
    """Fitted float64 logistic regression on all 1797 digits, its closed-form Hessian and RHS."""
    digits = load_digits()
    X = digits.data / 16.0
    t = digits.target.astype(numpy.int32)
    Y = numpy.eye(10)[t]

    def objective(w):
        W = w.reshape(10, 64)
        Z = X.dot(W.T)
        zmax = Z.max(axis=1)
        lse = numpy.log(numpy.exp(Z - zmax[:, None]).sum(axis=1)) + zmax
        value = numpy.mean(lse - Z[numpy.arange(len(X)), t]) + WEIGHT_DECAY / 2 * w.dot(w)
        grad = (softmax(Z) - Y).T.dot(X).ravel() / len(X) + WEIGHT_DECAY * w
        return value, grad

    fit = scipy.optimize.minimize(objective, numpy.zeros(640), jac=True, method='L-BFGS-B',
                                  options={'gtol': 1e-10, 'ftol': 0.0, 'maxiter': 2000})
    W = fit.x.reshape(10, 64)
    assert numpy.abs(objective(fit.x)[1]).max() < 1e-8
    model = L.Linear(64, 10, nobias=True)
    model.W.array = W.copy()
    # batch_size 500 leaves a last batch of 297: the batch weighting is exercised.
    curvature = ci.Curvature(model, ci.softmax_cross_entropy_loss, (X, t),
                             weight_decay=WEIGHT_DECAY, batch_size=500)
    H = logreg_hessian(W, X, WEIGHT_DECAY)
    G = logreg_gradients(W, X[:8], t[:8])
    return {'X': X, 't': t, 'W': W, 'model': model, 'curvature': curvature, 'H': H, 'G': G}


@pytest.fixture(scope='module')
def digits_tanh_mlp():
    """A 64-4-10 tanh MLP (310 float64 params) trained on 300 digits; its Hessian by differences."""
    digits = load_digits()
    X = digits.data[:300] / 16.0
    t = digits.target[:300].astype(numpy.int32)
    numpy.random.seed(0)
    with chainer.using_config('dtype', numpy.float64):
        model = TinyMLP(n_hidden=4)
    optimizer = chainer.optimizers.Adam(0.01)
    optimizer.setup(model)
    for _ in range(300):
        loss = F.mean(ci.softmax_cross_entropy_loss(model, X, t))
        model.cleargrads()
        loss.backward()
        optimizer.update()
    curvature = ci.Curvature(model, ci.softmax_cross_entropy_loss, (X, t), batch_size=128)
    space = curvature.space

    def gradient(theta):
        space.set_values(theta)
        loss = F.mean(ci.softmax_cross_entropy_loss(model, X, t))
        return space.flatten([g.array for g in chainer.grad([loss], space.params)])

    theta = space.values().copy()
    eps = 1e-5
    steps = eps * numpy.eye(space.size)
    H = numpy.stack([(gradient(theta + e) - gradient(theta - e)) / (2 * eps) for e in steps])
    space.set_values(theta)
    return {'model': model, 'curvature': curvature, 'H': (H + H.T) / 2}


def test_hvp_matches_closed_form(digits_logreg):
    curvature, H = digits_logreg['curvature'], digits_logreg['H']
    V = numpy.random.RandomState(1).standard_normal((3, 640))
    assert relative_error(curvature.hvp(V), V.dot(H)) < 1e-12
    assert relative_error(curvature.hvp(V[0]), H.dot(V[0])) < 1e-12


def test_minibatch_hvp_matches_closed_form(digits_logreg):
    X, t, W = digits_logreg['X'], digits_logreg['t'], digits_logreg['W']
    indices = numpy.array([3, 17, 256, 1000, 1796])
    V = numpy.random.RandomState(2).standard_normal((2, 640))
    expected = V.dot(logreg_hessian(W, X[indices], WEIGHT_DECAY))
    assert relative_error(digits_logreg['curvature'].hvp(V, indices), expected) < 1e-12


def test_hvp_on_chainer_dataset_float32(digits_logreg):
    X, t, W = digits_logreg['X'], digits_logreg['t'], digits_logreg['W']
    model = L.Linear(64, 10, nobias=True)
    model.W.array = W.astype(numpy.float32)
    train = chainer.datasets.TupleDataset(X.astype(numpy.float32), t)
    curvature = ci.Curvature(model, ci.softmax_cross_entropy_loss, train,
                             weight_decay=WEIGHT_DECAY)
    V = numpy.random.RandomState(3).standard_normal((2, 640)).astype(numpy.float32)
    assert curvature.n_train == len(X)
    assert relative_error(curvature.hvp(V), V.dot(digits_logreg['H'])) < 1e-5


def test_hvp_leaves_param_grads_alone_and_runs_in_test_mode(digits_logreg):
    modes = []

    def recording_loss(model, x, t):
        modes.append(chainer.config.train)
        return ci.softmax_cross_entropy_loss(model, x, t)

    model = digits_logreg['model']
    curvature = ci.Curvature(model, recording_loss, (digits_logreg['X'], digits_logreg['t']))
    model.W.grad = numpy.full(model.W.shape, 7.0)
    curvature.hvp(numpy.ones(640), indices=[0, 1])
    assert (model.W.grad == 7.0).all()
    assert modes == [False]
    assert chainer.config.train


def test_dense_hessian_matches_closed_form(digits_logreg):
    dense = digits_logreg['curvature'].dense_hessian()
    assert relative_error(dense, digits_logreg['H']) < 1e-12
    assert (dense == dense.T).all()


def test_dense_hessian_matches_differences_on_mlp(digits_tanh_mlp):
    dense = digits_tanh_mlp['curvature'].dense_hessian()
    assert relative_error(dense, digits_tanh_mlp['H']) < 1e-7


def test_top_eigenvalue(digits_logreg):
    expected = numpy.linalg.eigvalsh(digits_logreg['H'])[-1]
    estimate = digits_logreg['curvature'].top_eigenvalue(n_iter=20)
    assert expected * 0.99 < estimate <= expected * (1 + 1e-12)


@pytest.mark.parametrize('damping', [0.0, 0.1])
def test_exact_and_cg_match_numpy_solve(digits_logreg, damping):
    curvature, H, G = digits_logreg['curvature'], digits_logreg['H'], digits_logreg['G']
    expected = numpy.linalg.solve(H + damping * numpy.eye(640), G.T).T
    exact = ci.ExactSolver()
    assert relative_error(exact.solve(curvature, G, damping), expected) < 1e-5
    expected_w = numpy.linalg.eigvalsh(H)[[0, -1]] + damping
    assert numpy.allclose([exact.diagnostics['eigenvalue_min'],
                           exact.diagnostics['eigenvalue_max']], expected_w, rtol=1e-8)
    cg = ci.CGSolver(max_iter=200, tol=1e-8)
    X = cg.solve(curvature, G, damping)
    for k in range(len(G)):
        assert relative_error(X[k], expected[k]) < 1e-5
    assert (cg.diagnostics['relative_residual'] <= 1e-8).all()
    assert (cg.diagnostics['iterations'] > 0).all()
    assert cg.diagnostics['converged']


def test_cg_warns_when_not_converged(digits_logreg):
    curvature, G = digits_logreg['curvature'], digits_logreg['G']
    cg = ci.CGSolver(max_iter=3, tol=1e-12)
    with pytest.warns(UserWarning, match='did not converge in 3 iterations'):
        X = cg.solve(curvature, G[:2])
    assert not cg.diagnostics['converged']
    assert len(cg.diagnostics['residual_trace']) == 3
    # The returned iterate's residual is the one reported.
    residual = numpy.linalg.norm(G[:2] - X.dot(digits_logreg['H']), axis=1)
    reported = cg.diagnostics['relative_residual'] * numpy.linalg.norm(G[:2], axis=1)
    assert numpy.allclose(residual, reported, rtol=1e-6)


def test_exact_raises_on_indefinite(digits_logreg):
    """damping = -2 wd shifts the smallest eigenvalue of H (= wd) to -wd."""
    damping = -2 * WEIGHT_DECAY
    expected = numpy.linalg.eigvalsh(digits_logreg['H'])[0] + damping
    with pytest.raises(ci.NotPositiveDefiniteError) as info:
        ci.ExactSolver().solve(digits_logreg['curvature'], digits_logreg['G'], damping)
    reported = float(re.search(r'smallest eigenvalue is (\S+) ', str(info.value)).group(1))
    assert expected < 0
    assert reported == pytest.approx(expected, rel=1e-5)
    assert 'damping >' in str(info.value)


def test_cg_raises_on_indefinite(digits_logreg):
    H = digits_logreg['H']
    damping = -numpy.linalg.eigvalsh(H)[-1] / 2
    V = numpy.random.RandomState(4).standard_normal((2, 640))
    assert (numpy.einsum('kp,pq,kq->k', V, H, V) + damping * (V * V).sum(axis=1) < 0).all()
    with pytest.raises(ci.NotPositiveDefiniteError, match='Increase damping'):
        ci.CGSolver().solve(digits_logreg['curvature'], V, damping)


def test_mlp_exact_and_cg_agree_with_damping(digits_tanh_mlp):
    curvature, H = digits_tanh_mlp['curvature'], digits_tanh_mlp['H']
    damping = 0.05
    assert numpy.linalg.eigvalsh(H)[0] + damping > 0
    V = numpy.random.RandomState(5).standard_normal((3, curvature.space.size))
    exact = ci.ExactSolver().solve(curvature, V, damping)
    cg = ci.CGSolver(max_iter=300, tol=1e-9).solve(curvature, V, damping)
    assert relative_error(cg, exact) < 1e-6
    expected = numpy.linalg.solve(H + damping * numpy.eye(len(H)), V.T).T
    assert relative_error(exact, expected) < 1e-5


def test_mlp_exact_raises_without_damping(digits_tanh_mlp):
    expected = numpy.linalg.eigvalsh(digits_tanh_mlp['H'])[0]
    assert expected < 0  # the trained tanh MLP has negative curvature here
    with pytest.raises(ci.NotPositiveDefiniteError) as info:
        ci.ExactSolver().solve(digits_tanh_mlp['curvature'], numpy.ones(310))
    reported = float(re.search(r'smallest eigenvalue is (\S+) ', str(info.value)).group(1))
    assert reported == pytest.approx(expected, rel=1e-4)


def test_lissa_auto_scale_reaches_exact_direction(digits_logreg):
    curvature, H, G = digits_logreg['curvature'], digits_logreg['H'], digits_logreg['G']
    expected = numpy.linalg.solve(H, G.T).T
    solver = ci.LiSSASolver(depth=LISSA_DEPTH, batch_size=32, seed=0)
    estimate = solver.solve(curvature, G)
    assert (cosines(estimate, expected) >= 0.99).all()
    top = numpy.linalg.eigvalsh(H)[-1]
    assert solver.diagnostics['scale'] == pytest.approx(2 * top, rel=1e-2)
    assert solver.diagnostics['norm_trace'].shape == (1, LISSA_DEPTH)


def test_lissa_small_scale_raises(digits_logreg):
    solver = ci.LiSSASolver(depth=500, scale=0.1, batch_size=32, seed=0)
    with pytest.raises(ci.LiSSADivergenceError, match='scale must exceed') as info:
        solver.solve(digits_logreg['curvature'], digits_logreg['G'][:2])
    top = numpy.linalg.eigvalsh(digits_logreg['H'])[-1]
    reported = float(re.search(r'estimated at (\S+) ', str(info.value)).group(1))
    assert reported == pytest.approx(top, rel=1e-2)
    steps = solver.diagnostics['diverged_at']
    assert steps < 500
    assert numpy.isfinite(solver.diagnostics['norm_trace'][0, :steps]).all()


def test_lissa_same_seed_same_result(digits_logreg):
    curvature, G = digits_logreg['curvature'], digits_logreg['G'][:2]
    runs = [ci.LiSSASolver(depth=20, repeat=2, scale=2.0, seed=seed).solve(curvature, G)
            for seed in (7, 7, 8)]
    assert (runs[0] == runs[1]).all()
    assert not numpy.allclose(runs[0], runs[2])


def test_lissa_matches_its_recursion(digits_logreg):
    """A few steps of the documented recursion, written out with the closed-form Hessian."""
    X, t, W, G = digits_logreg['X'], digits_logreg['t'], digits_logreg['W'], digits_logreg['G']
    depth, scale, damping, batch_size = 5, 3.0, 0.1, 16
    got = ci.LiSSASolver(depth=depth, scale=scale, batch_size=batch_size, seed=3).solve(
        digits_logreg['curvature'], G[:2], damping)
    rng = numpy.random.RandomState(3)
    h = G[:2].copy()
    for _ in range(depth):
        indices = numpy.sort(rng.choice(len(X), batch_size, replace=False))
        A = logreg_hessian(W, X[indices], WEIGHT_DECAY) + damping * numpy.eye(640)
        h = G[:2] + h - h.dot(A) / scale
    assert relative_error(got, h / scale) < 1e-12


def count_graph_objects():
    return sum(isinstance(o, (chainer.FunctionNode, chainer.variable.VariableNode))
               for o in gc.get_objects())


def test_lissa_keeps_no_graph_alive(digits_logreg):
    """Live FunctionNodes/VariableNodes, counted at every forward, stay flat (gc off)."""
    counts = []

    def counting_loss(model, x, t):
        counts.append(count_graph_objects())
        return ci.softmax_cross_entropy_loss(model, x, t)

    curvature = ci.Curvature(digits_logreg['model'], counting_loss,
                             (digits_logreg['X'], digits_logreg['t']),
                             weight_decay=WEIGHT_DECAY)
    gc.collect()
    before = count_graph_objects()
    gc.disable()
    try:
        ci.LiSSASolver(depth=60, scale=2.0).solve(curvature, digits_logreg['G'][:3])
        after = count_graph_objects()
    finally:
        gc.enable()
    assert len(counts) == 60
    assert max(counts) == min(counts) == before == after


def test_progress_bar_only_on_a_terminal(digits_logreg, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    curvature, G = digits_logreg['curvature'], digits_logreg['G'][:1]
    terminal = Terminal()
    monkeypatch.setattr(sys, 'stderr', terminal)
    with pytest.warns(UserWarning):
        ci.CGSolver(max_iter=2, tol=0.0).solve(curvature, G)
    assert 'CG [' in terminal.getvalue()
    quiet = Terminal()
    monkeypatch.setattr(sys, 'stderr', quiet)
    with pytest.warns(UserWarning):
        ci.CGSolver(max_iter=2, tol=0.0, progress=False).solve(curvature, G)
    assert quiet.getvalue() == ''


def test_exact_advice_is_a_damping_that_works():
    """Tiny positive eigenvalues below float32 precision: the suggested damping must solve."""
    rng = numpy.random.RandomState(0)
    x = (rng.randn(200, 20) * 100).astype(numpy.float32)
    t = rng.randint(0, 3, size=200).astype(numpy.int32)
    model = chainer.links.Linear(20, 3)
    model(x[:1])
    curvature = ci.Curvature(model, ci.softmax_cross_entropy_loss, (x, t), weight_decay=1e-3)
    g = numpy.ones((1, curvature.space.size), dtype=numpy.float32)
    solver = ci.ExactSolver()
    with pytest.raises(ci.NotPositiveDefiniteError) as info:
        solver.solve(curvature, g, damping=0.0)
    suggested = float(re.search(r'e\.g\. damping=([0-9.e+-]+)\.', str(info.value)).group(1))
    assert suggested > 0
    assert numpy.isfinite(solver.solve(curvature, g, damping=suggested)).all()
