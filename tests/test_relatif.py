"""RelatIF (influence / sqrt(self-influence)) against a dense computation, in float64."""
import numpy
import pytest

import chainer
import chainer.links as L

import chainer_influence as ci
from chainer_influence import influence as influence_module
from chainer_influence.retraining import fit_lbfgs

from digits_models import WEIGHT_DECAY, digits, fitted_mlp

LOSS = ci.softmax_cross_entropy_loss
FLIPPED = [5, 40]  # training examples given the wrong label


@pytest.fixture(scope='module')
def mlp_problem():
    return fitted_mlp()


@pytest.fixture(scope='module')
def mislabelled():
    """Logistic regression on digits 1 vs 7 (150 examples) with two labels flipped."""
    (x, t), test = digits(150, 40, classes=[1, 7])
    t = t.copy()
    t[FLIPPED] = 1 - t[FLIPPED]
    with chainer.using_config('dtype', numpy.float64):
        model = L.Linear(64, 2, nobias=True, initialW=chainer.initializers.Zero())
    assert fit_lbfgs(model, LOSS, (x, t), WEIGHT_DECAY) < 1e-8
    calc = ci.InfluenceFunctions(model, (x, t), solver=ci.ExactSolver(),
                                 weight_decay=WEIGHT_DECAY, progress=False)
    return calc, test


def test_relatif_equals_dense_influence_over_sqrt_self_influence(mlp_problem):
    model, train, tests = mlp_problem
    params, damping = ['/l2/W', '/l2/b'], 0.01
    calc = ci.InfluenceFunctions(model, train, params=params, solver=ci.ExactSolver(),
                                 damping=damping, weight_decay=WEIGHT_DECAY, progress=False)
    H = calc.curvature.dense_hessian() + damping * numpy.eye(calc.space.size)
    G = ci.per_sample_gradients(model, LOSS, train, params=params, flat=True)  # (N, P)
    g = ci.per_sample_gradients(model, LOSS, tests, params=params, flat=True)  # (M, P)
    H_inv_G = numpy.linalg.solve(H, G.T)  # (P, N)
    self_influence = numpy.einsum('pn,np->n', H_inv_G, G)
    want = -g.dot(H_inv_G) / numpy.sqrt(self_influence)
    got = calc.influence(tests, normalize='relatif')
    numpy.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-12 * numpy.abs(want).max())
    # Cauchy-Schwarz in the H^-1 inner product: |RelatIF| <= sqrt(g_test^T H^-1 g_test)
    bound = numpy.sqrt(numpy.einsum('mp,mp->m', g, numpy.linalg.solve(H, g.T).T))
    assert (numpy.abs(got) <= bound[:, None] * (1 + 1e-9)).all()


def test_self_influence_is_computed_once(mlp_problem, monkeypatch):
    model, train, tests = mlp_problem
    calc = ci.InfluenceFunctions(model, train, params=['/l2/W', '/l2/b'],
                                 solver=ci.ExactSolver(), damping=0.01, progress=False)
    passes = []
    original = influence_module.InfluenceFunctions._stream

    def counting(self, prefix, block_scores, title, *args, **kwargs):
        passes.append(title)
        return original(self, prefix, block_scores, title, *args, **kwargs)

    monkeypatch.setattr(influence_module.InfluenceFunctions, '_stream', counting)
    first = calc.influence((tests[0][:1], tests[1][:1]), normalize='relatif')
    second = calc.influence((tests[0][1:], tests[1][1:]), normalize='relatif')
    self_influence = calc.self_influence()
    assert passes == ['influence', 'self-influence', 'influence']
    plain = calc.influence(tests)
    want = plain / numpy.sqrt(self_influence)  # solved for 3 test points at once: round-off
    numpy.testing.assert_allclose(numpy.concatenate([first, second]), want, rtol=1e-10,
                                  atol=1e-13 * numpy.abs(want).max())
    self_influence[:] = 0  # the returned array is a copy; the kept values are safe
    assert (calc.self_influence() > 0).all()
    calc.space.params[0].array[0, 0] += 1e-3  # new parameter values: computed again
    calc.self_influence()
    assert passes.count('self-influence') == 2


def test_relatif_demotes_a_mislabelled_outlier(mislabelled):
    calc, test = mislabelled
    self_influence = calc.self_influence()
    assert set(numpy.argsort(-self_influence)[:2]) == set(FLIPPED)  # the outliers
    plain = ci.top_influential(calc.influence(test), 1)
    relatif = ci.top_influential(calc.influence(test, normalize='relatif'), 1)
    plain_share = numpy.isin(plain['harmful'][:, 0], FLIPPED).mean()
    relatif_share = numpy.isin(relatif['harmful'][:, 0], FLIPPED).mean()
    # measured: a flipped example tops the harmful list of 21 of 40 test points, 3 with RelatIF
    assert plain_share >= 0.4
    assert relatif_share <= 0.15


def test_relatif_norms_guard_zero_and_negative_self_influence():
    norms = influence_module.relatif_norms(numpy.array([4.0, 0.0, -1e-12]))
    assert norms[0] == 2.0 and 0 < norms[1] == norms[2] < 1e-5
    assert (0.0 / norms[1]) == 0.0  # a zero gradient keeps a zero score
    with pytest.raises(ci.NotPositiveDefiniteError, match='example 1 .* self-influence -0.5'):
        influence_module.relatif_norms(numpy.array([4.0, -0.5]))
    with pytest.raises(ci.NotPositiveDefiniteError):
        influence_module.relatif_norms(numpy.array([0.0, -1e-30]))
    tiny = influence_module.relatif_norms(numpy.zeros(3))
    assert numpy.isfinite(0.0 / tiny).all()


def test_bad_normalize_and_cost_warning(mlp_problem):
    model, train, tests = mlp_problem
    calc = ci.InfluenceFunctions(model, train, params=['/l2/W', '/l2/b'],
                                 solver=ci.CGSolver(progress=False), damping=0.1,
                                 weight_decay=WEIGHT_DECAY, progress=False)
    with pytest.raises(ValueError, match="normalize must be None or 'relatif'"):
        calc.influence(tests, normalize='l2')
    with pytest.raises(ValueError, match='normalize'):
        ci.InfluenceExtension(train, tests, normalize='RelatIF')
    with pytest.warns(ci.SelfInfluenceCostWarning, match='N=200 solves'):
        calc.influence((tests[0][:1], tests[1][:1]), normalize='relatif')


def test_relatif_with_ekfac_needs_no_solve_per_example(mlp_problem, recwarn):
    model, train, tests = mlp_problem
    calc = ci.InfluenceFunctions(model, train, solver=ci.EKFACSolver(), curvature='gauss-newton',
                                 damping=0.01, weight_decay=WEIGHT_DECAY, progress=False)
    relatif = calc.influence(tests, normalize='relatif')
    assert not [w for w in recwarn if issubclass(w.category, ci.SelfInfluenceCostWarning)]
    numpy.testing.assert_allclose(
        relatif, calc.influence(tests) / numpy.sqrt(calc.self_influence()), rtol=1e-10)
