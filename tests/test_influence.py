"""InfluenceFunctions against leave-one-out retraining, refits and dense formulas."""
import os

import numpy
import pytest

import chainer

import chainer_influence as ci
from chainer_influence import influence as influence_module
from chainer_influence.retraining import fit_lbfgs, objective

from digits_models import (WEIGHT_DECAY, SumOfEmbeddings, fitted_logreg, fitted_mlp,
                           token_problem)

LOSS = ci.softmax_cross_entropy_loss


@pytest.fixture(scope='module')
def logreg():
    return fitted_logreg()


def _test_loss(model, x, t):
    with chainer.using_config('train', False):
        return float(LOSS(model, x[None], t[None]).array[0])


def _copy(model):
    return model.copy(mode='copy')


def _loo_pearson(logreg, solver, n_remove=30):
    """Pearson of predicted (-influence/N) against actual test-loss changes for top-|influence|."""
    model, train, test = logreg
    N = len(train[0])
    x_test, t_test = test[0][:1], test[1][:1]
    calc = ci.InfluenceFunctions(model, train, solver=solver, weight_decay=WEIGHT_DECAY,
                                 progress=False)
    scores = calc.influence((x_test, t_test))[0]
    top = numpy.argsort(-numpy.abs(scores))[:n_remove]
    base = _test_loss(model, x_test[0], t_test[0])
    actual = []
    for i in top:
        weights = numpy.ones(N)
        weights[i] = 0.0
        retrained = _copy(model)
        fit_lbfgs(retrained, LOSS, train, WEIGHT_DECAY, weights=weights)
        actual.append(_test_loss(retrained, x_test[0], t_test[0]) - base)
    predicted = -scores[top] / N
    return numpy.corrcoef(predicted, actual)[0, 1]


def test_loo_retraining_exact(logreg):
    r = _loo_pearson(logreg, ci.ExactSolver())
    print('LOO Pearson, Exact:', r)
    assert r >= 0.99


def test_loo_retraining_lissa(logreg):
    r = _loo_pearson(logreg, ci.LiSSASolver(depth=1000, repeat=1, batch_size=100, seed=0,
                                            progress=False))
    print('LOO Pearson, LiSSA:', r)
    assert r >= 0.95


def test_influence_on_params_matches_upweighted_refit(logreg):
    model, train, _ = logreg
    N = len(train[0])
    calc = ci.InfluenceFunctions(model, train, solver=ci.ExactSolver(),
                                 weight_decay=WEIGHT_DECAY, progress=False)
    indices = [3, 17]
    predicted = calc.influence_on_params(indices)
    assert predicted.shape == (2, calc.space.size)
    eps = 1e-3
    for row, i in zip(predicted, indices):
        refits = []
        for sign in (1, -1):  # central difference in epsilon
            weights = numpy.ones(N)
            weights[i] += sign * N * eps  # up-weight z_i by +-eps
            refit = _copy(model)
            fit_lbfgs(refit, LOSS, train, WEIGHT_DECAY, weights=weights)
            refits.append(ci.ParameterSpace(refit).values())
        actual = (refits[0] - refits[1]) / (2 * eps)
        rel = numpy.linalg.norm(actual - row) / numpy.linalg.norm(row)
        assert rel < 1e-2, rel


def test_perturbation_influence_matches_finite_difference(logreg):
    model, train, test = logreg
    calc = ci.InfluenceFunctions(model, train, solver=ci.ExactSolver(),
                                 weight_decay=WEIGHT_DECAY, progress=False)
    tests = (test[0][:2], test[1][:2])
    s = calc.s_test(tests)
    indices = [5, 40]
    pert = calc.perturbation_influence(tests, indices)
    assert pert.shape == (2, 2, 64)
    u = numpy.random.RandomState(1).randn(64)
    h = 1e-5
    for k, i in enumerate(indices):
        diffs = []
        for sign in (1, -1):
            x = train[0].copy()
            x[i] += sign * h * u
            moved = ci.InfluenceFunctions(model, (x, train[1]), solver=ci.ExactSolver(),
                                          weight_decay=WEIGHT_DECAY, progress=False)
            diffs.append(moved.influence(tests, s_test=s)[:, i])
        fd = (diffs[0] - diffs[1]) / (2 * h)
        numpy.testing.assert_allclose(pert[:, k] @ u, fd, rtol=1e-5, atol=1e-10)


def test_perturbation_influence_rejects_integer_inputs():
    x, t = token_problem()
    calc = ci.InfluenceFunctions(SumOfEmbeddings(), (x, t), solver=ci.ExactSolver(), damping=0.1,
                                 progress=False)
    with pytest.raises(TypeError, match='floating point'):
        calc.perturbation_influence((x[:1], t[:1]), [0])


@pytest.fixture(scope='module')
def mlp_problem():
    return fitted_mlp()


def _dense(model, train, tests, damping):
    """Dense reference: H from the Hessian, G from per_sample_gradients, solved with numpy."""
    calc = ci.InfluenceFunctions(model, train, solver=ci.ExactSolver(), damping=damping,
                                 weight_decay=WEIGHT_DECAY, progress=False)
    H = calc.curvature.dense_hessian() + damping * numpy.eye(calc.space.size)
    G = ci.per_sample_gradients(model, LOSS, train, flat=True)
    g_test = ci.per_sample_gradients(model, LOSS, tests, flat=True)
    return calc, -g_test @ numpy.linalg.solve(H, G.T), numpy.einsum(
        'np,np->n', G, numpy.linalg.solve(H, G.T).T)


def test_streaming_influence_equals_dense_formula(mlp_problem, monkeypatch):
    model, train, tests = mlp_problem
    monkeypatch.setattr(influence_module, 'SCORE_BLOCK', 64)  # several blocks, ragged last one
    calc, want, want_self = _dense(model, train, tests, damping=0.01)
    calc.batch_size = 48
    got = calc.influence(tests)
    assert got.shape == (3, 200)
    numpy.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-10 * numpy.abs(want).max())
    numpy.testing.assert_allclose(calc.self_influence(), want_self, rtol=1e-7)
    assert (want_self > 0).all()


def test_cache_resumes_after_interruption(mlp_problem, monkeypatch, tmp_path):
    model, train, tests = mlp_problem
    monkeypatch.setattr(influence_module, 'SCORE_BLOCK', 50)
    kwargs = dict(solver=ci.ExactSolver(), damping=0.01, weight_decay=WEIGHT_DECAY,
                  progress=False, batch_size=25)
    fresh = ci.InfluenceFunctions(model, train, **kwargs).influence(tests)

    calls = {'n': 0}
    original = influence_module.InfluenceFunctions._backward

    def interrupted(self, hook, batch):
        calls['n'] += 1
        if calls['n'] == 6:  # 1 call for the test gradients, then dies in block 3 of 4
            raise KeyboardInterrupt
        return original(self, hook, batch)

    monkeypatch.setattr(influence_module.InfluenceFunctions, '_backward', interrupted)
    first = ci.InfluenceFunctions(model, train, cache_dir=str(tmp_path), **kwargs)
    with pytest.raises(KeyboardInterrupt):
        first.influence(tests)
    (key,) = os.listdir(str(tmp_path))
    files = os.listdir(str(tmp_path / key))
    assert len([f for f in files if f.startswith('scores_')]) == 2
    assert not any(f.endswith('.tmp') for f in files)  # no half-written block left behind

    calls['n'] = -10 ** 6  # no more interruptions; count the batches recomputed
    resumed = ci.InfluenceFunctions(model, train, cache_dir=str(tmp_path), **kwargs)
    scores = resumed.influence(tests)
    assert calls['n'] == -10 ** 6 + 4  # s_test came from the cache; blocks 3 and 4 ran
    numpy.testing.assert_array_equal(scores, fresh)


def test_cache_for_other_settings_is_not_reused(mlp_problem, tmp_path):
    model, train, tests = mlp_problem
    kwargs = dict(solver=ci.ExactSolver(), weight_decay=WEIGHT_DECAY, progress=False,
                  cache_dir=str(tmp_path))
    a = ci.InfluenceFunctions(model, train, damping=0.01, **kwargs).influence(tests)
    with pytest.warns(UserWarning, match='not reused'):
        b = ci.InfluenceFunctions(model, train, damping=0.5, **kwargs).influence(tests)
    assert len(os.listdir(str(tmp_path))) == 2
    assert not numpy.allclose(a, b)


def test_params_subset_uses_last_layer_only(mlp_problem):
    model, train, tests = mlp_problem
    calc = ci.InfluenceFunctions(model, train, params=['/l2/W', '/l2/b'], damping=0.01,
                                 weight_decay=WEIGHT_DECAY, progress=False)
    assert calc.param_names == ['/l2/W', '/l2/b']
    assert isinstance(calc.solver, ci.ExactSolver)  # P = 90: the default picks Exact
    H = calc.curvature.dense_hessian() + 0.01 * numpy.eye(90)
    G = ci.per_sample_gradients(model, LOSS, train, params=calc.param_names, flat=True)
    g = ci.per_sample_gradients(model, LOSS, tests, params=calc.param_names, flat=True)
    numpy.testing.assert_allclose(calc.influence(tests), -g @ numpy.linalg.solve(H, G.T),
                                  rtol=1e-7, atol=1e-12)


def test_clear_errors(mlp_problem):
    model, train, tests = mlp_problem
    with pytest.raises(ValueError, match='training set is empty'):
        ci.InfluenceFunctions(model, (train[0][:0], train[1][:0]), progress=False)
    calc = ci.InfluenceFunctions(model, train, solver=ci.ExactSolver(), damping=0.01,
                                 progress=False)
    with pytest.raises(ValueError, match='test set is empty'):
        calc.influence((tests[0][:0], tests[1][:0]))
    with pytest.raises(ValueError, match='shapes'):
        calc.influence((tests[0][:, :10], tests[1]))

    def scalar_loss(model, x, t):
        return chainer.functions.mean(LOSS(model, x, t))

    bad = ci.InfluenceFunctions(model, train, loss_fn=scalar_loss, solver=ci.ExactSolver(),
                                damping=0.01, progress=False)
    with pytest.raises(ValueError, match='per-example losses'):
        bad.s_test(tests)

    broken = _copy(model)
    broken.l2.W.array[0, 0] = numpy.nan
    with pytest.raises(ValueError, match='parameter /l2/W contains NaN'):  # found up front
        ci.InfluenceFunctions(broken, train, solver=ci.ExactSolver(), damping=0.01,
                              progress=False)


def test_objective_gradient_is_zero_at_the_fit(logreg):
    model, train, _ = logreg
    _, grad = objective(model, LOSS, train, WEIGHT_DECAY)
    assert numpy.abs(grad).max() < 1e-8
