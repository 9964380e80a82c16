"""Input validation (checks.py) where inputs enter, and the solvers' failure messages."""
import re
import warnings

import numpy
import pytest

import chainer
import chainer.functions as F
import chainer.links as L

import chainer_influence as ci
from chainer_influence import checks

from digits_models import SumOfEmbeddings, digits, token_problem

LOSS = ci.softmax_cross_entropy_loss


def _normal(scale, seed):
    return chainer.initializers.Normal(scale, rng=numpy.random.RandomState(seed))


@pytest.fixture(scope='module')
def problem():
    """A float64 linear classifier on 120 digits (unfitted: the loss is convex either way)."""
    train, test = digits(120, 3)
    with chainer.using_config('dtype', numpy.float64):
        model = L.Linear(64, 10, initialW=_normal(0.1, 0))
    return model, train, test


def _calc(model, train, **kwargs):
    kwargs.setdefault('solver', ci.ExactSolver())
    kwargs.setdefault('damping', 0.01)
    return ci.InfluenceFunctions(model, train, progress=False, **kwargs)


@pytest.mark.parametrize('label', [10, 12, -3])
def test_labels_out_of_range(problem, label):
    model, (x, t), test = problem
    t = t.copy()
    t[57] = label
    with pytest.raises(ValueError, match=r'example 57 has label {}.*\[0, 10\)'.format(label)):
        _calc(model, (x, t)).influence(test)
    calc = _calc(model, (x, t.clip(0, 9)))  # in range: fine
    with pytest.raises(ValueError, match=r'test set example 1 has label'):
        calc.influence((test[0], numpy.array([0, label, 1], numpy.int32)))


def test_ignore_label_is_allowed_and_has_zero_influence(problem):
    model, (x, t), test = problem
    t = t.copy()
    t[5] = -1
    scores = _calc(model, (x, t)).influence(test)
    assert (scores[:, 5] == 0).all() and (scores[:, :5] != 0).all()


def test_float_labels_and_integer_inputs(problem):
    model, (x, t), _ = problem
    with pytest.raises(TypeError, match=r'labels have dtype float32.*astype\(numpy.int32\)'):
        _calc(model, (x, t.astype(numpy.float32)))
    with pytest.raises(TypeError, match=r'inputs have dtype int64.*astype\(numpy.float32\)'):
        _calc(model, ((x * 16).astype(numpy.int64), t))


def test_integer_inputs_are_accepted_with_embed_id():
    x, t = token_problem()
    scores = ci.InfluenceFunctions(SumOfEmbeddings(), (x, t), solver=ci.ExactSolver(), damping=0.1,
                                   progress=False).influence((x[:2], t[:2]))
    assert scores.shape == (2, 20)
    t_bad = t.copy()
    t_bad[7] = 2
    with pytest.raises(ValueError, match='example 7 has label 2'):  # labels are still checked
        ci.InfluenceFunctions(SumOfEmbeddings(), (x, t_bad), solver=ci.ExactSolver(), damping=0.1,
                              progress=False).influence((x[:2], t[:2]))


@pytest.mark.parametrize('as_dataset', [False, True])
def test_nan_input_is_reported_with_its_index(problem, as_dataset):
    model, (x, t), test = problem
    x = x.copy()
    x[83, 5] = numpy.nan
    train = list(zip(x, t)) if as_dataset else (x, t)  # a plain list streams through batches
    for solver in (ci.ExactSolver(), ci.CGSolver()):
        with pytest.raises(ValueError, match='training set example 83 has NaN or inf'):
            _calc(model, train, solver=solver, batch_size=32).influence(test)
    x_test = test[0].copy()
    x_test[2, 0] = numpy.inf
    with pytest.raises(ValueError, match='test set example 2 has NaN or inf'):
        _calc(model, (x[:80], t[:80])).influence((x_test, test[1]))


def test_training_examples_are_checked_once_inside_the_passes(problem, monkeypatch):
    model, train, test = problem
    seen = []
    original = checks.check_examples

    def counting(batch, what, **kwargs):
        seen.append((what, len(batch[0])))
        return original(batch, what, **kwargs)

    monkeypatch.setattr(checks, 'check_examples', counting)
    calc = _calc(model, train, solver=ci.CGSolver(), batch_size=50)
    calc.influence(test)
    calc.influence(test)
    checked = sum(n for what, n in seen if what == 'training set')
    assert checked == 2 + 120  # the first example up front (twice: dtypes, then labels); then each once


def test_params_argument(problem):
    model, train, _ = problem
    with pytest.raises(TypeError, match=r"params must be a list of names, e.g. \['/fc/W'\]"):
        _calc(model, train, params='/W')
    with pytest.raises(ValueError, match='unknown parameter names'):
        _calc(model, train, params=['/fc/W'])
    classifier = L.Classifier(model)
    calc = _calc(classifier, train, params=['/predictor/W'])  # the trainer's naming works too
    assert calc.param_names == ['/W']


@pytest.mark.parametrize('kwargs, match', [
    (dict(batch_size=0), 'batch_size must be a positive integer'),
    (dict(batch_size=2.5), 'batch_size must be a positive integer'),
    (dict(damping=float('nan')), 'damping must be a finite number >= 0, got nan'),
    (dict(damping=-1.0), 'damping must be a finite number >= 0'),
    (dict(weight_decay=float('inf')), 'weight_decay must be a finite number >= 0'),
    (dict(solver=ci.CGSolver), r'solver=CGSolver\(\)'),
])
def test_bad_arguments(problem, kwargs, match):
    model, train, _ = problem
    with pytest.raises((TypeError, ValueError), match=match):
        _calc(model, train, **kwargs)


@pytest.mark.parametrize('kwargs, match', [
    (dict(scale=float('inf')), 'scale must be a finite positive number, got inf'),
    (dict(scale=0.0), 'scale must be a finite positive number'),
    (dict(scale='big'), "scale must be 'auto' or a finite positive number"),
    (dict(depth=0), 'depth must be a positive integer'),
    (dict(batch_size=-2), 'batch_size must be a positive integer'),
])
def test_lissa_arguments(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        ci.LiSSASolver(**kwargs)
    with pytest.raises(ValueError, match='max_iter must be a positive integer'):
        ci.CGSolver(max_iter=0)


def test_indices(problem):
    model, train, test = problem
    calc = _calc(model, train)
    for bad, match in ((-1, r'holds -1'), (120, r'\[0, 120\).*holds 120')):
        with pytest.raises(ValueError, match='train_indices must lie in .*' + match):
            calc.influence_on_params([3, bad])
        with pytest.raises(ValueError, match='train_indices'):
            calc.perturbation_influence(test, [bad])
    with pytest.raises(TypeError, match='integer indices'):
        calc.influence_on_params([1.5])
    assert calc.influence_on_params(numpy.array([119, 0])).shape == (2, 650)


def test_models_that_cannot_be_used(problem):
    _, train, _ = problem
    with pytest.raises(ValueError, match='has no parameters'):
        _calc(chainer.Chain(), train)
    with pytest.raises(ValueError, match='not initialised'):
        _calc(L.Linear(None, 10), train)
    half = L.Linear(64, 10)
    for p in half.params():
        p.array = p.array.astype(numpy.float16)
    with pytest.raises(TypeError, match='float16.*float32 copy'):
        _calc(half, train)


# ---- solver messages ---------------------------------------------------------------------
class SmallMLP(chainer.Chain):
    def __init__(self):
        super().__init__()
        with self.init_scope():
            self.l1 = L.Linear(64, 4, initialW=_normal(1.0, 1))
            self.l2 = L.Linear(4, 10, initialW=_normal(1.0, 2))

    def forward(self, x):
        return self.l2(F.tanh(self.l1(x)))


@pytest.fixture(scope='module')
def indefinite():
    """An untrained tanh MLP (P = 310): its Hessian is indefinite; the dense one for checks."""
    train, test = digits(80, 2)
    with chainer.using_config('dtype', numpy.float64):
        model = SmallMLP()
    calc = _calc(model, train, solver=ci.CGSolver(max_iter=500, tol=1e-8), damping=0.0)
    H = calc.curvature.dense_hessian()
    return model, train, test, H, numpy.linalg.eigvalsh(H)[0]


def test_cg_suggested_damping_works_when_retried(indefinite):
    model, train, test, H, lowest = indefinite
    assert lowest < -1e-3
    calc = _calc(model, train, solver=ci.CGSolver(max_iter=500, tol=1e-8), damping=0.0)
    with pytest.raises(ci.NotPositiveDefiniteError) as error:
        calc.s_test(test)
    message = str(error.value)
    suggested = float(re.search(r'e\.g\. damping=([0-9.e+-]+)', message).group(1))
    estimate = float(re.search(r'smallest eigenvalue of H is about ([0-9.e+-]+)', message).group(1))
    assert abs(estimate - lowest) <= 1e-3 * abs(lowest)  # Lanczos found lambda_min
    assert -lowest < suggested < 2 * -lowest
    retried = _calc(model, train, solver=ci.CGSolver(max_iter=500, tol=1e-10), damping=suggested)
    g = ci.per_sample_gradients(model, LOSS, test, flat=True)
    want = numpy.linalg.solve(H + suggested * numpy.eye(len(H)), g.T).T
    numpy.testing.assert_allclose(retried.s_test(test), want, rtol=1e-6, atol=1e-10)


def test_lissa_names_an_indefinite_hessian(indefinite):
    model, train, test, _, lowest = indefinite
    calc = _calc(model, train, solver=ci.LiSSASolver(depth=400, batch_size=80, progress=False),
                 damping=0.0)
    with pytest.raises(ci.LiSSADivergenceError) as error:
        calc.s_test(test)
    message = str(error.value)
    assert 'H is indefinite' in message and "curvature='gauss-newton'" in message
    assert 'scale >=' not in message
    suggested = float(re.search(r'e\.g\. damping=([0-9.e+-]+)', message).group(1))
    assert suggested > -lowest


def test_zero_gradient_parameters_are_named_and_solved_apart():
    """A tracked link the loss never uses: warned about by name; CG matches the dense solve."""
    train, test = digits(100, 3)

    class WithUnused(chainer.Chain):
        def __init__(self):
            super().__init__()
            with self.init_scope():
                self.fc = L.Linear(64, 10, initialW=_normal(0.1, 0))
                self.unused = L.Linear(3, 2)

        def forward(self, x):
            return self.fc(x)

    with chainer.using_config('dtype', numpy.float64):
        model = WithUnused()
    kwargs = dict(weight_decay=0.01, damping=0.0)
    with pytest.warns(UserWarning, match=r'zero gradient for every training example: '
                                         r'/unused/W, /unused/b\.'):
        got = _calc(model, train, solver=ci.CGSolver(tol=1e-10), **kwargs).influence(test)
    want = _calc(model, train, params=['/fc/W', '/fc/b'], **kwargs).influence(test)
    numpy.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)


def test_cg_does_not_stall_on_a_singular_block():
    """Pixels that are zero in every training image make H singular there (no weight decay);
    a test image lighting them makes the system inconsistent. Those coordinates are solved
    apart, so CG converges and the scores equal the dense solve on the other coordinates."""
    train, test = digits(150, 5, classes=[3, 8])
    x, t = train
    live = (x != 0).any(axis=0)
    x_test = test[0].copy()
    x_test[:, ~live] = 0.5  # lights every dead pixel
    tests = (x_test, test[1])

    def binary_logistic(model, x, t):
        return F.softplus(-F.reshape(model(x), (-1,)) * (2.0 * t - 1))

    with chainer.using_config('dtype', numpy.float64):
        model = L.Linear(64, 1, nobias=True, initialW=_normal(0.1, 0))
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no non-convergence warning
        got = ci.InfluenceFunctions(model, (x, t), loss_fn=binary_logistic,
                                    solver=ci.CGSolver(max_iter=200, tol=1e-10),
                                    damping=0.0, progress=False).influence(tests)
    G = ci.per_sample_gradients(model, binary_logistic, (x, t), flat=True)
    g = ci.per_sample_gradients(model, binary_logistic, tests, flat=True)
    H = ci.Curvature(model, binary_logistic, (x, t)).dense_hessian()
    H_live = H[numpy.ix_(live, live)]
    want = -g[:, live] @ numpy.linalg.solve(H_live, G[:, live].T)
    numpy.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-10 * numpy.abs(want).max())
