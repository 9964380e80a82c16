"""The on-disk cache: never a stale, corrupt or half-written result."""
import os
import threading
import time
import warnings

import numpy
import pytest

import chainer
import chainer.functions as F
import chainer.links as L

import chainer_influence as ci
from chainer_influence import cache as cache_module
from chainer_influence import influence as influence_module
from chainer_influence.files import atomic_write

from digits_models import digits

LOSS = ci.softmax_cross_entropy_loss


@pytest.fixture(scope='module')
def problem():
    train, test = digits(90, 3, classes=[0, 1, 2])
    with chainer.using_config('dtype', numpy.float64):
        model = L.Linear(64, 3, initialW=chainer.initializers.Normal(
            0.1, rng=numpy.random.RandomState(0)))
    return model, train, test


def _scores(model, train, test, cache_dir=None, loss_fn=LOSS, **kwargs):
    return ci.InfluenceFunctions(model, train, loss_fn=loss_fn, solver=ci.ExactSolver(),
                                 damping=0.01, progress=False, cache_dir=cache_dir,
                                 **kwargs).influence(test)


def _keys(path):
    return sorted(d for d in os.listdir(str(path)) if (path / d / 'settings.json').exists())


def _recomputes(tmp_path, model, train, test, changed, **kwargs):
    """Cache the original, then run the changed inputs on the same cache_dir: the result must be
    the fresh result for the changed inputs, under a new key."""
    _scores(model, train, test, str(tmp_path), **kwargs.get('before', {}))
    with pytest.warns(UserWarning, match='not reused'):
        got = _scores(*changed, str(tmp_path), **kwargs.get('after', {}))
    fresh = _scores(*changed, **kwargs.get('after', {}))
    numpy.testing.assert_array_equal(got, fresh)
    assert len(_keys(tmp_path)) == 2
    return got


def test_swapped_examples_recompute(problem, tmp_path):
    model, (x, t), test = problem
    order = numpy.arange(len(x))
    order[[10, 60]] = order[[60, 10]]
    got = _recomputes(tmp_path, model, (x, t), test, (model, (x[order], t[order]), test))
    numpy.testing.assert_allclose(got[:, [60, 10]], _scores(model, (x, t), test)[:, [10, 60]])


def test_changed_label_recomputes(problem, tmp_path):
    model, (x, t), test = problem
    t2 = t.copy()
    t2[33] = (t2[33] + 1) % 3
    _recomputes(tmp_path, model, (x, t), test, (model, (x, t2), test))


def test_changed_example_in_a_chainer_dataset_recomputes(problem, tmp_path):
    model, (x, t), test = problem
    x2 = x.copy()
    x2[77, 3] += 0.5
    _recomputes(tmp_path, model, list(zip(x, t)), test, (model, list(zip(x2, t)), test))


def test_different_lambda_loss_with_the_same_name_recomputes(problem, tmp_path):
    model, train, test = problem
    first = lambda model, x, t: LOSS(model, x, t)  # NOQA: both are called '<lambda>'
    second = lambda model, x, t: 2 * LOSS(model, x, t)  # NOQA
    _recomputes(tmp_path, model, train, test, (model, train, test),
                before=dict(loss_fn=first), after=dict(loss_fn=second))


def test_closure_value_change_recomputes(problem, tmp_path):
    model, train, test = problem

    def scaled(factor):
        def loss(model, x, t):
            return factor * LOSS(model, x, t)
        return loss

    _recomputes(tmp_path, model, train, test, (model, train, test),
                before=dict(loss_fn=scaled(1.0)), after=dict(loss_fn=scaled(3.0)))


def test_unidentifiable_loss_is_not_cached(problem, tmp_path):
    model, train, test = problem
    lock = threading.Lock()

    def loss(model, x, t):
        with lock:
            return LOSS(model, x, t)

    with pytest.warns(UserWarning, match=r"not caching.*closure variable 'lock'.*lock"):
        scores = _scores(model, train, test, str(tmp_path), loss_fn=loss)
    numpy.testing.assert_array_equal(scores, _scores(model, train, test))
    assert os.listdir(str(tmp_path)) == []


class MLP(chainer.Chain):
    activation = staticmethod(F.relu)

    def __init__(self):
        super().__init__()
        with self.init_scope():
            self.l1 = L.Linear(64, 6, initialW=chainer.initializers.Normal(
                0.3, rng=numpy.random.RandomState(1)))
            self.l2 = L.Linear(6, 10)

    def forward(self, x):
        return self.l2(self.activation(self.l1(x)))


class TanhMLP(MLP):
    activation = staticmethod(F.tanh)


def test_changed_forward_with_the_same_weights_recomputes(problem, tmp_path):
    _, train, test = problem
    with chainer.using_config('dtype', numpy.float64):
        relu, tanh = MLP(), TanhMLP()
    tanh.copyparams(relu)
    kwargs = dict(params=['/l2/W', '/l2/b'])
    got = _recomputes(tmp_path, relu, train, test, (tanh, train, test), before=kwargs,
                      after=kwargs)
    assert not numpy.allclose(got, _scores(relu, train, test, **kwargs))


def test_untracked_parameter_change_recomputes(problem, tmp_path):
    _, train, test = problem
    with chainer.using_config('dtype', numpy.float64):
        a = MLP()
        b = MLP()
    b.copyparams(a)
    b.l1.W.array[0, 0] += 1.0  # not tracked, but it changes every score
    kwargs = dict(params=['/l2/W', '/l2/b'])
    _recomputes(tmp_path, a, train, test, (b, train, test), before=kwargs, after=kwargs)


def test_settings_name_what_the_key_covers(problem, tmp_path):
    model, train, test = problem
    _scores(model, train, test, str(tmp_path))
    (key,) = _keys(tmp_path)
    settings = (tmp_path / key / 'settings.json').read_text()
    for field in ('train_sha1', 'loss_fn_sha1', 'model_structure_sha1', 'model_values_sha1',
                  '"chainer_influence": "{}"'.format(ci.__version__), 'ExactSolver', 'LinearFunction'):
        assert field in settings


@pytest.mark.parametrize('damage', ['truncate', 'garbage', 'pickle', 'nan', 'shape'])
def test_bad_block_is_named_removed_and_recomputed(problem, tmp_path, damage):
    model, train, test = problem
    want = _scores(model, train, test, str(tmp_path))
    (key,) = _keys(tmp_path)
    blocks = [f for f in os.listdir(str(tmp_path / key)) if f.endswith('.npy')]
    assert len(blocks) == 2  # s_test and one score block
    for name in blocks:
        path = tmp_path / key / name
        if damage == 'truncate':
            path.write_bytes(path.read_bytes()[:100])
        elif damage == 'garbage':
            path.write_bytes(b'not a numpy file at all' * 10)
        elif damage == 'pickle':
            numpy.save(str(path), numpy.array([{'a': 1}], dtype=object), allow_pickle=True)
        elif damage == 'nan':
            numpy.save(str(path), numpy.full_like(numpy.load(str(path)), numpy.nan))
        elif damage == 'shape':
            numpy.save(str(path), numpy.load(str(path))[:1])
    with pytest.warns(UserWarning, match=r'cache block .*\.npy is invalid') as record:
        got = _scores(model, train, test, str(tmp_path))
    named = sorted(os.path.basename(str(w.message).split()[2]) for w in record)
    assert named == sorted(blocks)  # each bad block named
    numpy.testing.assert_array_equal(got, want)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # repaired: read back without complaint
        numpy.testing.assert_array_equal(_scores(model, train, test, str(tmp_path)), want)


def test_write_that_dies_midway_leaves_the_old_file(tmp_path):
    path = str(tmp_path / 'top_influential.png')
    atomic_write(path, lambda f: f.write(b'the good figure'))

    def dies_midway(f):
        f.write(b'half a fig')
        raise KeyboardInterrupt  # as a SIGKILL would stop it, the target is not touched

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, dies_midway)
    assert open(path, 'rb').read() == b'the good figure'
    assert os.listdir(str(tmp_path)) == ['top_influential.png']


def test_figures_are_written_atomically(tmp_path, monkeypatch):
    from matplotlib.figure import Figure
    from chainer_influence import plots
    path = str(tmp_path / 'self_influence.png')
    plots.plot_self_influence(numpy.arange(10.0), path)
    good = open(path, 'rb').read()
    assert good.startswith(b'\x89PNG')

    def dies_midway(self, f, **kwargs):
        f.write(b'\x89PNG half')
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, 'savefig', dies_midway)
    with pytest.raises(KeyboardInterrupt):
        plots.plot_self_influence(numpy.arange(10.0), path)
    assert open(path, 'rb').read() == good


def test_stale_temporaries_are_removed(problem, tmp_path):
    model, train, test = problem
    _scores(model, train, test, str(tmp_path))
    (key,) = _keys(tmp_path)
    stale = tmp_path / key / '.scores_x_0_90.npy.abc123.tmp'
    fresh = tmp_path / key / '.scores_x_0_90.npy.def456.tmp'  # another process, writing now
    stale.write_bytes(b'killed')
    fresh.write_bytes(b'in progress')
    old = time.time() - 3600
    os.utime(str(stale), (old, old))
    _scores(model, train, test, str(tmp_path))
    assert not stale.exists() and fresh.exists()


def test_old_caches_are_pruned_keeping_the_latest_three(problem, tmp_path):
    model, train, test = problem
    created = []
    for damping in [0.1, 0.2, 0.3, 0.4]:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            ci.InfluenceFunctions(model, train, solver=ci.ExactSolver(), damping=damping,
                                  progress=False, cache_dir=str(tmp_path)).influence(test)
        created += [k for k in _keys(tmp_path) if k not in created]
        for age, key in enumerate(created):  # distinct mtimes in order of use
            if os.path.exists(str(tmp_path / key)):
                os.utime(str(tmp_path / key), (time.time() - 100 + age,) * 2)
    assert len(created) == 4 and _keys(tmp_path) == sorted(created[1:])
    (tmp_path / 'notes.txt').write_text('not a cache')
    assert cache_module.prune(str(tmp_path), keep=1) == [created[2], created[1]]
    assert _keys(tmp_path) == [created[3]] and (tmp_path / 'notes.txt').exists()


def test_test_points_are_hashed_once_per_call(problem, tmp_path, monkeypatch):
    model, train, test = problem
    calc = ci.InfluenceFunctions(model, train, solver=ci.ExactSolver(), damping=0.01,
                                 progress=False, cache_dir=str(tmp_path))
    calls = []
    original = influence_module.InfluenceFunctions._test_key

    def counting(self, batch):
        calls.append(len(batch[0]))
        return original(self, batch)

    monkeypatch.setattr(influence_module.InfluenceFunctions, '_test_key', counting)
    calc.influence(test)
    assert calls == [3]
