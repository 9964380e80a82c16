"""Validation experiments (leave-one-out, mislabel detection) and their parts, each checked against
an independent computation (scipy, scikit-learn, closed forms, a refit by hand)."""
import numpy
import pytest
import scipy.stats
from sklearn.metrics import roc_auc_score
from sklearn.svm import LinearSVC

import chainer
import chainer.functions as F
import chainer.links as L

import chainer_influence as ci
from chainer_influence import validation
from chainer_influence.retraining import fit_lbfgs

from digits_models import WEIGHT_DECAY, digits, fitted_logreg

LOSS = ci.softmax_cross_entropy_loss
# digits are nearly separable: with weight decay 0.1, 3 vs 8 has ~80 of 250 training points inside
# the margin (with 0.01 only ~17), enough candidates for 30 removals.
SVM_CLASSES = [3, 8]
SVM_WEIGHT_DECAY = 0.1


def _linear(n_in, n_out):
    with chainer.using_config('dtype', numpy.float64):
        return L.Linear(n_in, n_out, nobias=True, initialW=chainer.initializers.Zero())


# ---- statistics against scipy / scikit-learn -------------------------------------------------
def _tied_values(n=200, seed=0):
    rng = numpy.random.RandomState(seed)
    return rng.randint(0, 20, size=n).astype(float), rng.randn(n)


def test_rankdata_and_spearman_match_scipy():
    a, b = _tied_values()
    numpy.testing.assert_array_equal(validation.rankdata(a), scipy.stats.rankdata(a))
    assert validation.spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a, b)[0], abs=1e-12)
    assert validation.pearson(a, b) == pytest.approx(scipy.stats.pearsonr(a, b)[0], abs=1e-12)


def test_roc_auc_matches_sklearn_with_ties():
    scores, noise = _tied_values()
    positives = numpy.flatnonzero(noise > 0.8)
    mask = numpy.zeros(len(scores), dtype=bool)
    mask[positives] = True
    want = roc_auc_score(mask, scores)
    assert validation.roc_auc(scores, positives) == pytest.approx(want, abs=1e-12)
    assert validation.roc_auc(scores, mask) == pytest.approx(want, abs=1e-12)


def test_detection_curve_counts_flipped_in_score_order():
    scores = numpy.array([0.1, 0.9, 0.5, 0.7, 0.2])
    checked, found = validation.detection_curve(scores, [2, 4])  # order: 1, 3, 2, 4, 0
    numpy.testing.assert_allclose(checked, [0, .2, .4, .6, .8, 1])
    numpy.testing.assert_allclose(found, [0, 0, 0, .5, 1, 1])
    summary = validation.detection_summary(scores, [2, 4], checkpoints=(0.5, 0.6))
    assert summary['found_at'] == {0.5: 0.5, 0.6: 0.5}  # ceil(0.5 * 5) = 3 examples checked
    assert summary['auc'] == pytest.approx(roc_auc_score([0, 0, 1, 0, 1], scores))


def test_flip_labels_changes_exactly_the_drawn_labels():
    labels = numpy.arange(1000, dtype=numpy.int32) % 10
    noisy, flipped = validation.flip_labels(labels, 0.1, 10, seed=3)
    assert noisy.dtype == labels.dtype and len(flipped) == 100
    changed = numpy.flatnonzero(noisy != labels)
    numpy.testing.assert_array_equal(changed, flipped)
    assert noisy.min() >= 0 and noisy.max() <= 9
    again, _ = validation.flip_labels(labels, 0.1, 10, seed=3)
    numpy.testing.assert_array_equal(noisy, again)
    binary, flipped = validation.flip_labels(labels % 2, 0.2, seed=0)
    numpy.testing.assert_array_equal(binary[flipped], 1 - labels[flipped] % 2)


# ---- smooth hinge against its closed form ----------------------------------------------------
def _sigmoid(u):
    return 0.5 * (1 + numpy.tanh(u / 2))


@pytest.mark.parametrize('t', [0.001, 0.1, 1.0])
def test_smooth_hinge_value_gradient_and_hvp(t):
    rng = numpy.random.RandomState(0)
    x = rng.randn(40, 5)
    y01 = (rng.rand(40) > 0.5).astype(numpy.int32)
    model = _linear(5, 1)
    model.W.array[...] = rng.randn(1, 5)
    w = model.W.array[0]
    y = 2.0 * y01 - 1
    s = y * x.dot(w)
    u = (1 - s) / t
    loss_fn = ci.smooth_hinge_loss(t)

    losses = loss_fn(model, x, y01)
    # log(1 + e^u) for u << 0 is accurate to t * eps absolutely (logsumexp has no log1p)
    numpy.testing.assert_allclose(losses.array, t * numpy.logaddexp(0, u), rtol=1e-12,
                                  atol=t * 1e-15)
    numpy.testing.assert_array_equal(losses.array, loss_fn(model, x, y.astype(numpy.int32)).array)
    assert numpy.abs(u).max() > 1000 or t > 0.001  # exp((1 - s) / t) overflows at t = 0.001

    want_grad = (-_sigmoid(u) * y)[:, None] * x  # d loss_i / d w
    got_grad = ci.per_sample_gradients(model, loss_fn, (x, y01), flat=True)
    numpy.testing.assert_allclose(got_grad, want_grad, rtol=1e-10, atol=1e-12)

    curvature = ci.Curvature(model, loss_fn, (x, y01), weight_decay=0.01)
    H = (x.T * (_sigmoid(u) * (1 - _sigmoid(u)) / t)).dot(x) / len(x) + 0.01 * numpy.eye(5)
    V = rng.randn(3, 5)
    numpy.testing.assert_allclose(curvature.hvp(V), V.dot(H), rtol=1e-9, atol=1e-12)


def test_smooth_hinge_zero_is_the_hinge():
    x = numpy.array([[2.0], [0.5], [-1.0]])
    model = _linear(1, 1)
    model.W.array[...] = 1.0
    loss_fn = ci.smooth_hinge_loss(0)
    assert loss_fn is ci.hinge_loss
    numpy.testing.assert_allclose(loss_fn(model, x, numpy.array([1, 1, 0])).array, [0, 0.5, 0])
    with pytest.raises(ValueError):
        ci.smooth_hinge_loss(-1)


# ---- the exact SVM solver against liblinear ---------------------------------------------------
def _svm_primal(theta, x, labels, weight_decay, weights):
    s = numpy.where(labels > 0, 1.0, -1.0) * x.dot(theta)
    return (weights * numpy.maximum(0, 1 - s)).mean() + 0.5 * weight_decay * theta.dot(theta)


@pytest.mark.filterwarnings('ignore::sklearn.exceptions.ConvergenceWarning')  # tol=1e-12 is strict
def test_fit_hinge_svm_matches_liblinear_also_with_an_example_removed():
    (x, t), _ = digits(250, 0, classes=SVM_CLASSES)
    n = len(x)
    for removed in (None, 7):
        weights = numpy.ones(n)
        keep = numpy.ones(n, dtype=bool)
        if removed is not None:
            weights[removed] = 0.0
            keep[removed] = False
        theta, alpha, kkt = validation.fit_hinge_svm(x, t, SVM_WEIGHT_DECAY, weights)
        assert kkt < 1e-9
        # liblinear: 1/2 ||w||^2 + C sum hinge, C = 1 / (weight_decay N) with N = all examples
        svc = LinearSVC(loss='hinge', fit_intercept=False, C=1.0 / (SVM_WEIGHT_DECAY * n),
                        tol=1e-12, max_iter=200000).fit(x[keep], t[keep])
        ours = _svm_primal(theta, x, t, SVM_WEIGHT_DECAY, weights)
        theirs = _svm_primal(svc.coef_[0], x, t, SVM_WEIGHT_DECAY, weights)
        assert ours <= theirs + 1e-12
        numpy.testing.assert_allclose(theta, svc.coef_[0], atol=1e-5)


@pytest.mark.filterwarnings('ignore::sklearn.exceptions.ConvergenceWarning')
def test_hinge_svm_retrainer_fits_a_bias_like_liblinear():
    (x, t), _ = digits(250, 0, classes=SVM_CLASSES)
    with chainer.using_config('dtype', numpy.float64):
        model = L.Linear(64, 1, initialW=chainer.initializers.Zero())
    validation.HingeSVMRetrainer(SVM_WEIGHT_DECAY)(model, (x, t), numpy.ones(len(x)))
    # liblinear's intercept is a constant-1 feature under the same L2 penalty
    svc = LinearSVC(loss='hinge', C=1.0 / (SVM_WEIGHT_DECAY * len(x)), intercept_scaling=1.0,
                    tol=1e-12, max_iter=200000).fit(x, t)
    numpy.testing.assert_allclose(model.W.array[0], svc.coef_[0], atol=1e-5)
    numpy.testing.assert_allclose(model.b.array, svc.intercept_, atol=1e-5)


# ---- retrainers ------------------------------------------------------------------------------
def test_momentum_sgd_retrainer_reaches_the_weighted_optimum():
    (x, t), _ = digits(100, 0)
    weights = numpy.ones(len(x))
    weights[[3, 50]] = 0.0
    weights[10] = 2.0
    model = _linear(64, 10)
    want = model.copy(mode='copy')
    fit_lbfgs(want, LOSS, (x, t), WEIGHT_DECAY, weights=weights)
    validation.MomentumSGDRetrainer(LOSS, WEIGHT_DECAY, steps=600, lr=1.0)(model, (x, t), weights)
    numpy.testing.assert_allclose(model.W.array, want.W.array, atol=1e-6)


# ---- leave-one-out experiments (fast versions of the scripts) --------------------------------
@pytest.fixture(scope='module')
def logreg():
    return fitted_logreg(n_train=300, n_test=50)


def test_loo_validation_logistic_regression(logreg):
    model, train, test = logreg
    tests = (test[0][:2], test[1][:2])
    solvers = {'Exact': ci.ExactSolver(),
               'LiSSA': ci.LiSSASolver(depth=1000, batch_size=100, seed=0, progress=False)}
    scores = {name: ci.InfluenceFunctions(model, train, solver=solver, weight_decay=WEIGHT_DECAY,
                                          progress=False).influence(tests)
              for name, solver in solvers.items()}
    retrain = validation.LBFGSRetrainer(LOSS, WEIGHT_DECAY)
    loo = validation.loo_validation(model, LOSS, train, tests, scores, retrain, n_remove=20,
                                    progress=False)
    assert loo['removed'].shape == loo['actual'].shape == (2, 20)
    assert max(retrain.grad_norms) < 1e-8
    print('LOO Pearson Exact', loo['methods']['Exact']['pearson'],
          'LiSSA', loo['methods']['LiSSA']['pearson'])
    assert (loo['methods']['Exact']['pearson'] >= 0.95).all()
    assert (loo['methods']['LiSSA']['pearson'] >= 0.90).all()
    # independent check of the bookkeeping: one removal refitted by hand
    m, k = 1, 4
    i = loo['removed'][m, k]
    weights = numpy.ones(len(train[0]))
    weights[i] = 0.0
    refit = model.copy(mode='copy')
    fit_lbfgs(refit, LOSS, train, WEIGHT_DECAY, weights=weights)
    losses = [validation.per_example_losses(mm, LOSS, tests)[m] for mm in (refit, model)]
    assert loo['actual'][m, k] == pytest.approx(losses[0] - losses[1], rel=1e-5)
    assert loo['methods']['Exact']['predicted'][m, k] == pytest.approx(
        -scores['Exact'][m, i] / len(train[0]))


def test_loo_validation_smooth_hinge_svm():
    train, test = digits(250, 100, classes=SVM_CLASSES)
    model = _linear(64, 1)
    retrain = validation.HingeSVMRetrainer(SVM_WEIGHT_DECAY)
    retrain(model, train, numpy.ones(len(train[0])))
    margins = ci.signed_margins(model, *train).array
    test_margins = ci.signed_margins(model, *test).array
    picked = numpy.flatnonzero(test_margins < 1)[:2]
    tests = (test[0][picked], test[1][picked])
    scores = {'t={}'.format(t): ci.InfluenceFunctions(
        model, train, ci.smooth_hinge_loss(t), ci.ExactSolver(), weight_decay=SVM_WEIGHT_DECAY,
        progress=False).influence(tests) for t in (0.001, 0.1)}
    loo = validation.loo_validation(model, ci.hinge_loss, train, tests, scores, retrain,
                                    n_remove=30, candidates=margins < 1 - 1e-6, progress=False)
    assert max(retrain.kkt) < 1e-9
    print('SVM LOO Pearson t=0.001', loo['methods']['t=0.001']['pearson'],
          't=0.1', loo['methods']['t=0.1']['pearson'])
    assert (loo['methods']['t=0.001']['pearson'] >= 0.90).all()


def test_mislabel_detection_logistic_regression():
    (x, t), _ = digits(500, 0)
    noisy, flipped = validation.flip_labels(t, 0.1, 10, seed=0)
    model = _linear(64, 10)
    fit_lbfgs(model, LOSS, (x, noisy), WEIGHT_DECAY)
    calc = ci.InfluenceFunctions(model, (x, noisy), solver=ci.ExactSolver(),
                                 weight_decay=WEIGHT_DECAY, progress=False)
    found = validation.mislabel_detection(calc, flipped, seed=1)
    assert set(found) == {'self-influence', 'training loss', 'random'}
    print({name: (round(s['auc'], 4), s['found_at']) for name, s in found.items()})
    assert found['self-influence']['auc'] >= 0.95
    assert found['self-influence']['found_at'][0.1] >= 0.6
    assert found['random']['auc'] == pytest.approx(0.5, abs=0.1)
    # self-influence against the dense formula g^T H^-1 g
    G = ci.per_sample_gradients(model, LOSS, (x, noisy), flat=True)
    H = calc.curvature.dense_hessian()
    want = numpy.einsum('np,np->n', G, numpy.linalg.solve(H, G.T).T)
    numpy.testing.assert_allclose(found['self-influence']['scores'], want, rtol=1e-8)


class _DigitsCNN(chainer.Chain):
    """1x8x8 digits -> conv 3x3 1->8, tanh, linear 288->10 (2,978 parameters)."""

    def __init__(self):
        super().__init__()
        with self.init_scope():
            self.conv = L.Convolution2D(1, 8, ksize=3)
            self.fc = L.Linear(8 * 6 * 6, 10)

    def forward(self, x):
        return self.fc(F.tanh(self.conv(F.reshape(x, (-1, 1, 8, 8)))))


def test_mislabel_detection_ekfac_self_influence_cnn():
    """EK-FAC self-influence (Gauss-Newton, default solver settings and damping) of a small CNN
    trained by SGD on digits with 10 % flipped labels finds the flips far better than random."""
    (x, t), _ = digits(500, 0, dtype=numpy.float32)
    noisy, flipped = validation.flip_labels(t, 0.1, 10, seed=0)
    numpy.random.seed(0)
    model = _DigitsCNN()
    validation.MomentumSGDRetrainer(LOSS, 1e-3, steps=300, lr=0.05, batch_size=50, seed=0)(
        model, (x, noisy), numpy.ones(len(x)))
    calc = ci.InfluenceFunctions(model, (x, noisy), solver=ci.EKFACSolver(),
                                 curvature='gauss-newton', weight_decay=1e-3, progress=False)
    found = validation.mislabel_detection(calc, flipped, seed=1)
    print({name: (round(s['auc'], 4), s['found_at']) for name, s in found.items()})
    # seeds 0-4 of flips, weights and minibatches, fisher 'sampled' and 'exact': AUC 0.980-0.989,
    # found at 10 % checked 0.72-0.90, at 20 % 0.96-1.00 (random: AUC 0.41-0.56, 0.06-0.16)
    assert (found['self-influence']['scores'] >= 0).all()
    assert found['self-influence']['auc'] >= 0.95
    assert found['self-influence']['found_at'][0.1] >= 0.6
    assert found['self-influence']['found_at'][0.2] >= 0.9
    assert found['self-influence']['auc'] >= found['random']['auc'] + 0.3
