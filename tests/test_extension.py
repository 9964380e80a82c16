"""InfluenceExtension in a real (tiny) Chainer trainer."""
import json
import os

import numpy
import pytest

import chainer
import chainer.links as L
from chainer import training
from chainer.training import extensions

import chainer_influence as ci

from digits_models import TinyMLP, digits

PNG = b'\x89PNG\r\n\x1a\n'


def _trainer(out, ext, epochs=2, weight_decay=1e-3, trigger=None):
    numpy.random.seed(0)  # Chainer's initializers and the iterator's shuffle use it
    (x, t), (xt, tt) = digits(300, 20, dtype=numpy.float32)
    train = chainer.datasets.TupleDataset(x, t)
    test = chainer.datasets.TupleDataset(xt, tt)
    model = L.Classifier(TinyMLP())
    optimizer = chainer.optimizers.MomentumSGD(lr=0.1)
    optimizer.setup(model)
    optimizer.add_hook(chainer.optimizer_hooks.WeightDecay(weight_decay))
    it = chainer.iterators.SerialIterator(train, 50, shuffle=True)
    updater = training.updaters.StandardUpdater(it, optimizer)
    trainer = training.Trainer(updater, (epochs, 'epoch'), out=out)
    trainer.extend(extensions.LogReport())
    trainer.extend(ext(train, test), trigger=trigger)
    return trainer, model, train, test


def _extension(train, test):
    return ci.InfluenceExtension(train, test, test_indices=[0, 3, 7], top_k=5, damping=0.5,
                                 self_influence=True, progress=False)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('result'))
    trainer, model, train, test = _trainer(out, _extension)
    trainer.run()
    return out, trainer, model, train, test


def test_files_exist_and_parse(trained):
    out, *_ = trained
    folder = os.path.join(out, 'influence')
    with open(os.path.join(folder, 'rankings.json')) as f:
        doc = json.load(f)
    assert [p['test_index'] for p in doc['test_points']] == [0, 3, 7]
    assert all(len(p['helpful']) == 5 and len(p['harmful']) == 5 for p in doc['test_points'])
    assert doc['settings']['weight_decay'] == pytest.approx(1e-3)  # read from the WeightDecay hook
    with open(os.path.join(folder, 'rankings.csv')) as f:
        assert len(f.read().strip().splitlines()) == 1 + 3 * 2 * 5
    npz = numpy.load(os.path.join(folder, 'influence.npz'))
    assert npz['scores'].shape == (3, 300) and npz['self_influence'].shape == (300,)
    for name in ('top_influential.png', 'self_influence.png'):
        with open(os.path.join(folder, name), 'rb') as f:
            assert f.read(8) == PNG
    assert not os.path.exists(os.path.join(folder, 'iteration_12'))  # default trigger: no copy


def test_log_has_reported_keys(trained):
    out, *_ = trained
    with open(os.path.join(out, 'log')) as f:
        log = json.load(f)
    last = log[-1]
    for key in ('influence/time', 'influence/n_test', 'influence/n_train',
                'influence/solver/eigenvalue_min'):
        assert key in last, key
    assert last['influence/n_test'] == 3
    assert all('influence/time' not in entry for entry in log[:-1])  # ran once, at the end


def test_rankings_equal_direct_computation(trained):
    out, trainer, model, train, test = trained
    calc = ci.InfluenceFunctions(model, train, weight_decay=1e-3, damping=0.5, progress=False)
    x, t = test[[0, 3, 7]][0], None
    batch = chainer.dataset.concat_examples([test[i] for i in (0, 3, 7)])
    scores = calc.influence(batch)
    ranks = ci.top_influential(scores, 5)
    with open(os.path.join(out, 'influence', 'rankings.json')) as f:
        doc = json.load(f)
    for m, point in enumerate(doc['test_points']):
        assert [e['train_index'] for e in point['helpful']] == ranks['helpful'][m].tolist()
        assert [e['train_index'] for e in point['harmful']] == ranks['harmful'][m].tolist()
        numpy.testing.assert_allclose([e['score'] for e in point['helpful']],
                                      ranks['helpful_scores'][m], rtol=1e-5)
    npz = numpy.load(os.path.join(out, 'influence', 'influence.npz'))
    numpy.testing.assert_allclose(npz['self_influence'], calc.self_influence(), rtol=1e-4)


def test_extension_leaves_model_and_config_untouched(trained):
    out, trainer, model, *_ = trained
    model.cleargrads()
    before = {name: p.array.copy() for name, p in model.namedparams()}
    assert chainer.config.train is True
    trainer.get_extension('InfluenceExtension')(trainer)
    assert chainer.config.train is True
    for name, p in model.namedparams():
        numpy.testing.assert_array_equal(p.array, before[name])
        assert p.grad is None


def test_every_epoch_trigger_keeps_history(tmp_path):
    trainer, *_ = _trainer(str(tmp_path), lambda tr, te: ci.InfluenceExtension(
        tr, te, test_indices=[1], top_k=3, damping=0.01, plot=False, progress=False,
        params=['/l2/W', '/l2/b']), trigger=(1, 'epoch'))
    trainer.run()
    folder = tmp_path / 'influence'
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith('iteration_')) == [
        'iteration_12', 'iteration_6']
    with open(str(tmp_path / 'log')) as f:
        assert all('influence/time' in entry for entry in json.load(f))


def test_one_line_extension_needs_no_damping_on_a_non_convex_mlp(tmp_path):
    trainer, *_ = _trainer(str(tmp_path), lambda tr, te: ci.InfluenceExtension(
        tr, te, test_indices=[0, 1], plot=False, self_influence=True, progress=False))
    trainer.run()
    with open(os.path.join(str(tmp_path), 'influence', 'rankings.json')) as f:
        settings = json.load(f)['settings']
    choice = settings['solver_choice']
    assert (settings['solver'], settings['curvature']) == ('EKFACSolver', 'gauss-newton')
    assert choice['damping'] == settings['damping'] > 0
    assert 'not affine' in choice['reason']
    assert choice['damping_rule'] == 'EKFACSolver.default_damping'


def test_relatif_extension_equals_direct_computation(tmp_path):
    params = ['/l2/W', '/l2/b']
    trainer, model, train, test = _trainer(str(tmp_path), lambda tr, te: ci.InfluenceExtension(
        tr, te, test_indices=[2, 5], top_k=3, damping=0.1, plot=False, progress=False,
        params=params, normalize='relatif', self_influence=True), epochs=1)
    trainer.run()
    with open(str(tmp_path / 'influence' / 'rankings.json')) as f:
        assert json.load(f)['settings']['normalize'] == 'relatif'
    calc = ci.InfluenceFunctions(model, train, weight_decay=1e-3, damping=0.1, params=params,
                                 progress=False)
    batch = chainer.dataset.concat_examples([test[2], test[5]])
    report = trainer.get_extension('InfluenceExtension').report
    numpy.testing.assert_allclose(report.scores, calc.influence(batch, normalize='relatif'),
                                  rtol=1e-4)
    numpy.testing.assert_allclose(report.self_influence, calc.self_influence(), rtol=1e-4)
