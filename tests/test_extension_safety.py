"""InfluenceExtension never costs a training run (issue 13): checks before training, failures,
resume, the trained loss and weight decay, names, figures, progress, hooks and datasets."""
import io
import json
import os
import sys
import warnings

import numpy
import pytest

import chainer
import chainer.functions as F
import chainer.links as L
from chainer import training
from chainer.training import extensions

import chainer_influence as ci
from chainer_influence import losses, plots, training_setup
from chainer_influence.batches import as_tuples

from digits_models import TinyMLP, digits

LAST = ['/predictor/l2/W', '/predictor/l2/b']  # names as the optimizer's target gives them
PNG = b'\x89PNG\r\n\x1a\n'


def _data(n_train=100, n_test=10):
    (x, t), (xt, tt) = digits(n_train, n_test, dtype=numpy.float32)
    return chainer.datasets.TupleDataset(x, t), chainer.datasets.TupleDataset(xt, tt)


def _trainer(out, extension=None, epochs=1, model=None, optimizer=None, train=None,
             loss_func=None, snapshot=False, log=True):
    numpy.random.seed(0)
    if train is None:
        train, _ = _data()
    model = model or L.Classifier(TinyMLP())
    optimizer = optimizer or chainer.optimizers.SGD(lr=0.1)
    optimizer.setup(model)
    it = chainer.iterators.SerialIterator(train, 50, shuffle=False)
    updater = training.updaters.StandardUpdater(it, optimizer, loss_func=loss_func)
    trainer = training.Trainer(updater, (epochs, 'epoch'), out=out)
    if log:
        trainer.extend(extensions.LogReport())
    if snapshot:
        trainer.extend(extensions.snapshot(filename='snapshot_{.updater.epoch}'),
                       trigger=(1, 'epoch'))
    if extension is not None:
        trainer.extend(extension)
    return trainer


def _extension(train, test, **kwargs):
    options = dict(test_indices=[0, 1], top_k=3, damping=0.1, params=LAST, progress=False,
                   plot=False)
    options.update(kwargs)
    return ci.InfluenceExtension(train, test, **options)


def _log(out):
    with open(os.path.join(out, 'log')) as f:
        return json.load(f)


# ---- 1. every mistake surfaces before training ------------------------------------------
def _bad_float_labels():
    train, test = _data()
    return train, chainer.datasets.TupleDataset(test._datasets[0],
                                                test._datasets[1].astype(numpy.float32))


def _bad_shape():
    train, test = _data()
    return train, chainer.datasets.TupleDataset(test._datasets[0][:, :32], test._datasets[1])


def _bad_label_range():
    train, test = _data()
    t = test._datasets[1].copy()
    t[1] = 12
    return train, chainer.datasets.TupleDataset(test._datasets[0], t)


@pytest.mark.parametrize('make, kwargs, error, words', [
    (_data, {'test_indices': [10 ** 6]}, ValueError, 'test_indices'),
    (_data, {'params': ['/predictor/l9/W']}, ValueError, 'unknown parameter'),
    (_bad_shape, {}, ValueError, 'shapes'),
    (_bad_float_labels, {}, TypeError, 'labels'),
    (_bad_label_range, {}, ValueError, 'label 12'),
    (_data, {'class_names': ['a', 'b']}, ValueError, 'class_names'),
])
def test_mistakes_raise_before_training(tmp_path, make, kwargs, error, words):
    train, test = make()
    trainer = _trainer(str(tmp_path), _extension(train, test, **kwargs), train=train)
    with pytest.raises(error, match=words):
        trainer.run(show_loop_exception_msg=False)
    assert trainer.updater.iteration == 0


def test_unwritable_output_folder_raises_before_training(tmp_path):
    train, test = _data()
    (tmp_path / 'influence').write_text('a file where the folder should be')
    trainer = _trainer(str(tmp_path), _extension(train, test), train=train)
    with pytest.raises(OSError, match='cannot write into the output folder'):
        trainer.run()
    assert trainer.updater.iteration == 0


def test_custom_loss_func_asks_for_loss_fn(tmp_path):
    train, test = _data()
    model = L.Classifier(TinyMLP())
    trainer = _trainer(str(tmp_path), _extension(train, test), model=model, train=train,
                       loss_func=lambda x, t: F.softmax_cross_entropy(model.predictor(x), t))
    with pytest.raises(training_setup.TrainingSetupError, match='loss_fn='):
        trainer.run()
    assert trainer.updater.iteration == 0


# ---- 2. failures never lose training -----------------------------------------------------
class FailingSolver(ci.ExactSolver):
    def solve(self, curvature, V, damping=0.0):
        raise RuntimeError('solver exploded')


def failing_writer(report, out_dir):
    raise IOError('disk full')


def test_failure_warns_logs_and_training_finishes(tmp_path):
    train, test = _data()
    out = str(tmp_path)
    trainer = _trainer(out, _extension(train, test, solver=FailingSolver()), train=train,
                       snapshot=True)
    with pytest.warns(ci.InfluenceRunWarning, match='solver exploded'):
        trainer.run()
    assert _log(out)[-1]['influence/failed'] == 1.0  # the last epoch's entry is written
    assert os.path.exists(os.path.join(out, 'snapshot_1'))  # and the final snapshot
    with open(os.path.join(out, 'influence', 'error.json')) as f:
        error = json.load(f)
    assert error['iteration'] == 2 and 'solver exploded' in error['failures'][0]['traceback']


def test_failure_with_on_error_raise(tmp_path):
    train, test = _data()
    trainer = _trainer(str(tmp_path), _extension(train, test, solver=FailingSolver(),
                                                 on_error='raise'), train=train)
    with pytest.raises(RuntimeError, match='solver exploded'):
        trainer.run(show_loop_exception_msg=False)
    assert os.path.exists(str(tmp_path / 'influence' / 'error.json'))


def test_writers_fail_independently(tmp_path):
    train, test = _data()
    out = str(tmp_path)
    writers = (failing_writer, ci.JSONWriter())
    trainer = _trainer(out, _extension(train, test, writers=writers, plot=True), train=train)
    with pytest.warns(ci.InfluenceRunWarning, match='disk full'):
        trainer.run()
    folder = os.path.join(out, 'influence')
    assert os.path.exists(os.path.join(folder, 'rankings.json'))
    assert os.path.exists(os.path.join(folder, 'top_influential.png'))
    assert _log(out)[-1]['influence/failed'] == 0.0  # the scores were computed
    with open(os.path.join(folder, 'error.json')) as f:
        assert json.load(f)['failures'][0]['what'] == 'failing_writer'


# ---- 3. resume ---------------------------------------------------------------------------
def test_resume_with_longer_training_runs_at_its_end(tmp_path):
    train, test = _data()
    first = str(tmp_path / 'first')
    _trainer(first, _extension(train, test), train=train, snapshot=True).run()
    with open(os.path.join(first, 'influence', 'rankings.json')) as f:
        assert json.load(f)['settings']['iteration'] == 2
    second = str(tmp_path / 'second')
    trainer = _trainer(second, _extension(train, test), train=train, epochs=2)
    chainer.serializers.load_npz(os.path.join(first, 'snapshot_1'), trainer)
    trainer.run()
    with open(os.path.join(second, 'influence', 'rankings.json')) as f:
        assert json.load(f)['settings']['iteration'] == 4


def test_snapshot_without_the_extension_loads(tmp_path):
    train, test = _data()
    first = str(tmp_path / 'first')
    _trainer(first, train=train, snapshot=True).run()
    trainer = _trainer(str(tmp_path / 'second'), _extension(train, test), train=train, epochs=2)
    chainer.serializers.load_npz(os.path.join(first, 'snapshot_1'), trainer)
    trainer.run()
    assert os.path.exists(str(tmp_path / 'second' / 'influence' / 'rankings.json'))


# ---- 4. the trained loss -----------------------------------------------------------------
def test_hinge_classifier_asks_for_a_loss_before_training(tmp_path):
    train, test = _data()
    model = L.Classifier(TinyMLP(), lossfun=F.hinge)
    trainer = _trainer(str(tmp_path), _extension(train, test), model=model, train=train)
    with pytest.raises(ci.TrainingSetupError, match='twice.*loss_fn='):
        trainer.run()
    assert trainer.updater.iteration == 0


def test_reduce_no_loss_matches_the_trained_mean():
    """F.hinge takes reduce='no'; its per-example form is found by matching the reduced value."""
    (x, t), _ = digits(20, 1, dtype=numpy.float32)
    model = L.Classifier(TinyMLP(), lossfun=F.hinge)
    loss_fn = training_setup.trained_loss(model, None, (x[:4], t[:4]))
    assert isinstance(loss_fn, losses.ReducedLoss) and loss_fn.reduction == 'sum'
    expected = F.hinge(model.predictor(x), t, reduce='no').array.sum(axis=1)
    numpy.testing.assert_allclose(loss_fn(model, x, t).array, expected, rtol=1e-6)
    assert float(F.hinge(model.predictor(x), t).array) == pytest.approx(
        float(expected.mean()), rel=1e-5)


def test_binary_sigmoid_classifier(tmp_path):
    (x, t), (xt, tt) = digits(100, 10, dtype=numpy.float32, classes=[3, 8])
    train = chainer.datasets.TupleDataset(x, t[:, None])
    test = chainer.datasets.TupleDataset(xt, tt[:, None])
    model = L.Classifier(TinyMLP(n_out=1), lossfun=F.sigmoid_cross_entropy,
                         accfun=F.binary_accuracy)
    ext = _extension(train, test, class_names=['three', 'eight'])
    trainer = _trainer(str(tmp_path), ext, model=model, train=train)
    trainer.run()
    assert ext._setup['loss_fn'] is ci.sigmoid_cross_entropy_loss
    calc = ci.InfluenceFunctions(model, train, loss_fn=ci.sigmoid_cross_entropy_loss,
                                 damping=0.1, params=['/l2/W', '/l2/b'], progress=False)
    expected = calc.influence((xt[:2], tt[:2, None]))
    numpy.testing.assert_allclose(ext.report.scores, expected, rtol=1e-4, atol=1e-7)
    assert set(ext.report.predicted_labels) <= {0, 1}
    bad = chainer.datasets.TupleDataset(xt, tt[:, None] + 1)  # labels 1 and 2
    trainer = _trainer(str(tmp_path / 'bad'), _extension(train, bad), model=model, train=train)
    with pytest.raises(ValueError, match='labels 0 or 1'):
        trainer.run()


def test_mean_squared_error_is_scaled_to_the_trained_mean():
    model = L.Classifier(L.Linear(4, 3), lossfun=F.mean_squared_error)
    x = numpy.random.RandomState(0).randn(6, 4).astype(numpy.float32)
    y = numpy.random.RandomState(1).randn(6, 3).astype(numpy.float32)
    loss_fn = training_setup.trained_loss(model, None, (x, y))
    assert float(F.mean_squared_error(model.predictor(x), y).array) == pytest.approx(
        float(loss_fn(model, x, y).array.mean()), rel=1e-5)


# ---- 5. weight decay -----------------------------------------------------------------------
def test_weight_decay_global_and_per_parameter():
    model = L.Classifier(TinyMLP())
    optimizer = chainer.optimizers.SGD().setup(model)
    optimizer.add_hook(chainer.optimizer_hooks.WeightDecay(1e-3))
    rate, ignored = training_setup.weight_decay_of(optimizer)
    assert rate == pytest.approx(1e-3) and ignored == []
    model.predictor.l2.W.update_rule.add_hook(chainer.optimizer_hooks.WeightDecay(1e-2))
    rate, ignored = training_setup.weight_decay_of(optimizer)
    assert rate['/l2/W'] == pytest.approx(1.1e-2) and rate['/l1/W'] == pytest.approx(1e-3)
    rate, _ = training_setup.weight_decay_of(optimizer, ['/l1/W', '/l1/b'])
    assert rate == pytest.approx(1e-3)  # uniform over the tracked parameters: a float


def test_ignored_regularisers_are_named():
    model = L.Classifier(TinyMLP())
    optimizer = chainer.optimizers.Adam(weight_decay_rate=1e-4).setup(model)
    optimizer.add_hook(chainer.optimizer_hooks.Lasso(1e-5))
    rate, ignored = training_setup.weight_decay_of(optimizer)
    assert rate == 0.0
    assert any('Lasso' in s for s in ignored) and any('weight_decay_rate' in s for s in ignored)


def test_extension_warns_about_ignored_weight_decay(tmp_path):
    train, test = _data()
    trainer = _trainer(str(tmp_path), _extension(train, test), train=train,
                       optimizer=chainer.optimizers.Adam(weight_decay_rate=1e-4))
    with pytest.warns(UserWarning, match='weight_decay_rate'):
        trainer.run()


def test_per_parameter_weight_decay_in_the_curvature():
    numpy.random.seed(0)
    (x, t), _ = digits(30, 1, classes=[0, 1])
    with chainer.using_config('dtype', numpy.float64):
        model = TinyMLP(n_hidden=3, n_out=2)
    model(x[:1])
    rates = {'/l1/W': 0.5, '/l2/b': 2.0}
    plain = ci.Curvature(model, ci.softmax_cross_entropy_loss, (x, t)).dense_hessian()
    decayed = ci.Curvature(model, ci.softmax_cross_entropy_loss, (x, t),
                           weight_decay=rates).dense_hessian()
    space = ci.ParameterSpace(model)
    diagonal = numpy.zeros(space.size)
    diagonal[space.slice('/l1/W')] = 0.5
    diagonal[space.slice('/l2/b')] = 2.0
    numpy.testing.assert_allclose(decayed, plain + numpy.diag(diagonal), atol=1e-12)


# ---- 10. PerSampleGradientHook -------------------------------------------------------------
def test_hook_records_a_plain_backward():
    (x, t), _ = digits(7, 1)
    with chainer.using_config('dtype', numpy.float64):
        model = L.Classifier(TinyMLP())
    model(x, t)
    expected = ci.per_sample_gradients(model, ci.softmax_cross_entropy_loss, (x, t))
    hook = ci.PerSampleGradientHook(model)
    model.cleargrads()
    with hook:
        loss = model(x, t)  # the mean over the batch
        loss.backward()
    for name, p in model.predictor.namedparams():
        numpy.testing.assert_allclose(hook.gradients[name], expected[name] / 7, rtol=1e-10)
        numpy.testing.assert_allclose(hook.gradients[name].sum(axis=0), p.grad, rtol=1e-10)


def test_hooks_coexist_and_library_passes_do_not_reach_them():
    (x, t), _ = digits(20, 1)
    with chainer.using_config('dtype', numpy.float64):
        model = L.Classifier(TinyMLP())
    model(x, t)
    first, second = ci.PerSampleGradientHook(model), ci.PerSampleGradientHook(model)
    model.cleargrads()
    with first, second:
        calc = ci.InfluenceFunctions(model, (x, t), damping=0.1, params=['/l2/W', '/l2/b'],
                                     progress=False)
        scores = calc.influence((x[:2], t[:2]))  # inside a user's hooks: no KeyError
        model(x[:4], t[:4]).backward()
    for hook in (first, second):
        assert hook.gradients['/l2/W'].shape == (4, 10, 8)  # only the user's backward
        numpy.testing.assert_allclose(hook.gradients['/l2/W'].sum(axis=0),
                                      model.predictor.l2.W.grad, rtol=1e-10)
    fresh = ci.InfluenceFunctions(model, (x, t), damping=0.1, params=['/l2/W', '/l2/b'],
                                  progress=False)
    numpy.testing.assert_allclose(scores, fresh.influence((x[:2], t[:2])), rtol=1e-10)


# ---- 11. datasets ----------------------------------------------------------------------------
def test_dict_dataset(tmp_path):
    (x, t), (xt, tt) = digits(100, 10, dtype=numpy.float32)
    train = chainer.datasets.DictDataset(x=x, t=t)
    test = chainer.datasets.DictDataset(x=xt, t=tt)
    model = L.Classifier(TinyMLP(), label_key='t')
    ext = _extension(train, test)
    _trainer(str(tmp_path), ext, model=model, train=train).run()
    calc = ci.InfluenceFunctions(model, chainer.datasets.TupleDataset(x, t), damping=0.1,
                                 params=['/l2/W', '/l2/b'], progress=False)
    numpy.testing.assert_allclose(ext.report.scores, calc.influence((xt[:2], tt[:2])),
                                  rtol=1e-5, atol=1e-7)
    assert as_tuples(test, keys=('x', 't'))[3][1] == tt[3]


def test_train_test_split_takes_a_fraction():
    data = ci.load_digits()
    train, test = ci.train_test_split(data, 0.25, seed=1)
    assert len(test) == round(0.25 * len(data)) and len(train) + len(test) == len(data)
    with pytest.raises(ValueError, match=r'\(0, 1\)'):
        ci.train_test_split(data, 1.5)
    with pytest.raises(TypeError, match='fraction'):
        ci.train_test_split(data, '10')


# ---- 7, 8. figures and the self-influence list -----------------------------------------------
def test_figures_and_self_influence_lists(tmp_path):
    train, test = _data()
    scaled = chainer.datasets.TupleDataset(train._datasets[0] * 255, train._datasets[1])
    out = str(tmp_path)
    ext = _extension(scaled, test, plot=True, self_influence=True)
    _trainer(out, ext, train=scaled).run()
    folder = os.path.join(out, 'influence')
    for name in ('top_influential.png', 'self_influence.png', 'top_self_influence.png'):
        with open(os.path.join(folder, name), 'rb') as f:
            assert f.read(8) == PNG
    with open(os.path.join(folder, 'rankings.json')) as f:
        top = json.load(f)['self_influence_top']
    assert [e['train_index'] for e in top] == list(numpy.argsort(-ext.report.self_influence)[:3])
    with open(os.path.join(folder, 'self_influence.csv')) as f:
        assert len(f.read().strip().splitlines()) == 1 + 3
    assert plots.detect_value_range(scaled._datasets[0]) == (0., 255.)
    assert plots.detect_value_range(train._datasets[0] * 2 - 1) == (-1., 1.)


def test_non_image_inputs_get_score_bars(tmp_path):
    (x, t), (xt, tt) = digits(100, 10, dtype=numpy.float32)
    train = chainer.datasets.TupleDataset(x[:, :10], t)
    test = chainer.datasets.TupleDataset(xt[:, :10], tt)
    with pytest.warns(UserWarning, match='score bars'):
        _trainer(str(tmp_path), _extension(train, test, plot=True, self_influence=True),
                 model=L.Classifier(TinyMLP(n_in=10)), train=train).run()
    for name in ('top_influential.png', 'top_self_influence.png'):
        with open(str(tmp_path / 'influence' / name), 'rb') as f:
            assert f.read(8) == PNG


# ---- 9. progress -----------------------------------------------------------------------------
class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_covers_every_phase_and_false_silences_all(monkeypatch):
    (x, t), _ = digits(40, 1)
    with chainer.using_config('dtype', numpy.float64):
        model = TinyMLP()
    model(x[:1])
    terminal = Terminal()
    monkeypatch.setattr(sys, 'stderr', terminal)
    ci.InfluenceFunctions(model, (x, t), damping=0.1, params=['/l2/W', '/l2/b'],
                          progress=True).influence((x[:1], t[:1]))
    text = terminal.getvalue()
    assert 'Hessian [' in text and 'influence [' in text and text.endswith('\n')
    quiet = Terminal()
    monkeypatch.setattr(sys, 'stderr', quiet)
    calc = ci.InfluenceFunctions(model, (x, t), damping=0.1, solver=ci.CGSolver(max_iter=3),
                                 progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        calc.influence((x[:1], t[:1]))
    assert quiet.getvalue() == ''
