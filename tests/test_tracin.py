"""TracIn online (TracInExtension) against sums over saved checkpoints, in float64."""
import json
import math
import os

import numpy
import pytest

import chainer
import chainer.functions as F
import chainer.links as L
from chainer import training
from chainer.training import extensions

import chainer_influence as ci

from digits_models import TinyMLP, digits

N_TRAIN, BATCH = 60, 20  # 3 iterations per epoch


class SaveCheckpoint(chainer.training.Extension):
    """Copies the parameters and the learning rate at each trigger (runs just before TracIn)."""

    priority = chainer.training.PRIORITY_WRITER + 1

    def __init__(self):
        self.saved = []

    def __call__(self, trainer):
        optimizer = trainer.updater.get_optimizer('main')
        params = {name: p.array.copy() for name, p in optimizer.target.namedparams()}
        self.saved.append((params, ci.learning_rate(optimizer)))


def _datasets():
    (x, t), (xt, tt) = digits(N_TRAIN, 10)
    return chainer.datasets.TupleDataset(x, t), chainer.datasets.TupleDataset(xt, tt)


def _trainer(out, optimizer, epochs=2, extend=None, shuffle=True):
    numpy.random.seed(0)  # initializers and the iterator's shuffle
    train, test = _datasets()
    with chainer.using_config('dtype', numpy.float64):
        model = L.Classifier(TinyMLP())
    optimizer.setup(model)
    it = chainer.iterators.SerialIterator(train, BATCH, shuffle=shuffle)
    updater = training.updaters.StandardUpdater(it, optimizer)
    trainer = training.Trainer(updater, (epochs, 'epoch'), out=out)
    if extend is not None:
        extend(trainer, train, test)
    return trainer, model, train, test


def _per_example_gradients(model, params, x, t):
    """(B, P) by one plain backward pass per example, at the parameter values ``params``."""
    for name, p in model.predictor.namedparams():
        p.array[...] = params['/predictor' + name]
    rows = []
    for i in range(len(x)):
        model.cleargrads()
        loss = ci.softmax_cross_entropy_loss(model, x[i:i + 1], t[i:i + 1])
        F.sum(loss).backward()
        rows.append(numpy.concatenate([p.grad.ravel()
                                       for _, p in model.predictor.namedparams()]))
    return numpy.array(rows)


@pytest.fixture(scope='module')
def momentum_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('tracin'))
    saver = SaveCheckpoint()

    def extend(trainer, train, test):
        trainer.extend(extensions.ExponentialShift('lr', 0.5), trigger=(1, 'epoch'))
        trainer.extend(saver, trigger=(1, 'epoch'))
        trainer.extend(ci.TracInExtension(train, test, test_indices=[0, 4, 9], top_k=4,
                                          progress=False), trigger=(1, 'epoch'))
        trainer.extend(ci.TracInExtension(train, train, test_indices=[3, 17], top_k=4,
                                          out='tracin_self', plot=False, progress=False),
                       name='tracin_self', trigger=(1, 'epoch'))
        trainer.extend(extensions.LogReport())

    trainer, model, train, test = _trainer(out, chainer.optimizers.MomentumSGD(lr=0.2),
                                           extend=extend)
    trainer.run()
    return out, trainer, model, train, test, saver.saved


def test_scores_equal_sum_over_saved_checkpoints(momentum_run):
    out, trainer, model, train, test, saved = momentum_run
    assert [lr for _, lr in saved] == [0.2, 0.1]  # ExponentialShift halves lr after epoch 1
    x, t = chainer.dataset.concat_examples(train)
    xt, tt = chainer.dataset.concat_examples([test[i] for i in (0, 4, 9)])
    expected = numpy.zeros((3, N_TRAIN))
    for params, lr in saved:
        G = _per_example_gradients(model, params, x, t)
        Gt = _per_example_gradients(model, params, xt, tt)
        expected -= lr * Gt.dot(G.T)
    scores = trainer.get_extension('TracInExtension').report.scores
    assert numpy.abs(scores - expected).max() <= 1e-5 * numpy.abs(expected).max()
    npz = numpy.load(os.path.join(out, 'tracin', 'influence.npz'))
    numpy.testing.assert_allclose(npz['scores'], scores, rtol=0, atol=0)


def test_training_example_scores_itself_minus_lr_squared_norm(momentum_run):
    out, trainer, model, train, test, saved = momentum_run
    x, t = chainer.dataset.concat_examples(train)
    expected = numpy.zeros(2)
    for params, lr in saved:
        G = _per_example_gradients(model, params, x[[3, 17]], t[[3, 17]])
        expected -= lr * (G ** 2).sum(axis=1)
    scores = trainer.get_extension('tracin_self').report.scores
    numpy.testing.assert_allclose(scores[[0, 1], [3, 17]], expected, rtol=1e-10)
    assert (expected < 0).all()  # an example is always helpful to itself


def test_outputs_settings_and_log(momentum_run):
    out, *_ = momentum_run
    folder = os.path.join(out, 'tracin')
    with open(os.path.join(folder, 'rankings.json')) as f:
        doc = json.load(f)
    settings = doc['settings']
    assert settings['method'] == 'TracIn' and settings['learning_rate'] == 'lr'
    assert settings['iterations'] == [3, 6] and settings['learning_rates'] == [0.2, 0.1]
    assert [p['test_index'] for p in doc['test_points']] == [0, 4, 9]
    assert all(len(p['helpful']) == 4 for p in doc['test_points'])
    assert os.path.exists(os.path.join(folder, 'rankings.csv'))
    with open(os.path.join(folder, 'top_influential.png'), 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert not os.path.exists(os.path.join(out, 'tracin_self', 'top_influential.png'))
    with open(os.path.join(out, 'log')) as f:
        log = json.load(f)
    assert [entry['tracin/lr'] for entry in log] == [0.2, 0.1]
    assert [entry['tracin/checkpoints'] for entry in log] == [1, 2]
    assert log[-1]['tracin/n_train'] == N_TRAIN


def test_learning_rate_of_momentum_sgd_and_adam():
    model = L.Linear(3, 2)
    momentum = chainer.optimizers.MomentumSGD(lr=0.05)
    momentum.setup(model)
    assert ci.learning_rate(momentum) == 0.05
    adam = chainer.optimizers.Adam(alpha=0.01, beta1=0.9, beta2=0.999)
    adam.setup(model)
    with pytest.raises(ValueError, match='no step yet'):
        ci.learning_rate(adam)
    for _ in range(3):
        model.cleargrads()
        F.sum(model(numpy.ones((1, 3), numpy.float32))).backward()
        adam.update()
    alpha_t = 0.01 * math.sqrt(1 - 0.999 ** 3) / (1 - 0.9 ** 3)
    assert ci.learning_rate(adam) == pytest.approx(alpha_t, rel=1e-12)
    adam.eta = 0.5  # a schedule's multiplier
    assert ci.learning_rate(adam) == pytest.approx(0.5 * alpha_t, rel=1e-12)
    delta = chainer.optimizers.AdaDelta()
    delta.setup(model)
    with pytest.raises(ValueError, match='pass lr='):
        ci.learning_rate(delta)


def test_adam_lr_recorded_per_trigger(tmp_path):
    def extend(trainer, train, test):
        trainer.extend(ci.TracInExtension(train, test, test_indices=[0], top_k=2, plot=False,
                                          progress=False), trigger=(2, 'iteration'))

    trainer, *_ = _trainer(str(tmp_path), chainer.optimizers.Adam(alpha=0.01), epochs=1,
                           extend=extend)
    trainer.run()
    settings = trainer.get_extension('TracInExtension').report.settings
    assert settings['iterations'] == [2]
    assert settings['learning_rate'].startswith('eta * alpha_t')
    expected = 0.01 * math.sqrt(1 - 0.999 ** 2) / (1 - 0.9 ** 2)
    assert settings['learning_rates'] == [pytest.approx(expected, rel=1e-12)]


def test_resume_from_snapshot_continues_the_sum(tmp_path):
    def extend(trainer, train, test):
        trainer.extend(ci.TracInExtension(train, test, test_indices=[1, 2], top_k=3, plot=False,
                                          progress=False), trigger=(1, 'epoch'))
        trainer.extend(extensions.snapshot(filename='snapshot_{.updater.iteration}'),
                       trigger=(1, 'epoch'))

    # no shuffling: the global numpy RNG that shuffles later epochs is not in a snapshot
    full, *_ = _trainer(str(tmp_path / 'full'), chainer.optimizers.MomentumSGD(lr=0.2),
                        epochs=3, extend=extend, shuffle=False)
    full.run()
    resumed, *_ = _trainer(str(tmp_path / 'resumed'), chainer.optimizers.MomentumSGD(lr=0.2),
                           epochs=3, extend=extend, shuffle=False)
    chainer.serializers.load_npz(str(tmp_path / 'full' / 'snapshot_3'), resumed)
    assert resumed.get_extension('TracInExtension').sum.iterations == [3]
    resumed.run()
    a = full.get_extension('TracInExtension').report
    b = resumed.get_extension('TracInExtension').report
    assert b.settings['iterations'] == [3, 6, 9]
    numpy.testing.assert_allclose(b.scores, a.scores, rtol=1e-12, atol=0)


@pytest.mark.filterwarnings('ignore:The previous value')  # Chainer's triggers, old snapshot
def test_snapshot_without_tracin_state_loads(tmp_path):
    plain, *_ = _trainer(str(tmp_path / 'a'), chainer.optimizers.MomentumSGD(lr=0.2), epochs=1)
    plain.run()
    chainer.serializers.save_npz(str(tmp_path / 'old.npz'), plain)

    def extend(trainer, train, test):
        trainer.extend(ci.TracInExtension(train, test, plot=False, progress=False))

    later, *_ = _trainer(str(tmp_path / 'b'), chainer.optimizers.MomentumSGD(lr=0.2), epochs=2,
                         extend=extend)
    chainer.serializers.load_npz(str(tmp_path / 'old.npz'), later)
    later.run()
    assert later.get_extension('TracInExtension').sum.iterations == [6]


def test_gradient_dots_leave_the_model_untouched():
    train, test = _datasets()
    with chainer.using_config('dtype', numpy.float64):
        model = L.Classifier(TinyMLP())
    model.cleargrads()
    before = {name: p.array.copy() for name, p in model.namedparams()}
    batch = chainer.dataset.concat_examples([test[0], test[1]])
    dots = ci.gradient_dots(model, ci.softmax_cross_entropy_loss, train, batch, batch_size=7,
                            progress=False)
    assert dots.shape == (2, N_TRAIN) and dots.dtype == numpy.float64
    for name, p in model.namedparams():
        numpy.testing.assert_array_equal(p.array, before[name])
        assert p.grad is None


def test_loss_without_double_backprop_is_fine_for_tracin(tmp_path):
    """TracIn needs first derivatives only: F.hinge (an old-style Function, which influence
    functions refuse at initialize) is read from the Classifier and scored."""
    numpy.random.seed(0)
    train, test = _datasets()
    with chainer.using_config('dtype', numpy.float64):
        model = L.Classifier(TinyMLP(), lossfun=F.hinge)
    optimizer = chainer.optimizers.SGD(lr=0.1)
    optimizer.setup(model)
    it = chainer.iterators.SerialIterator(train, BATCH, shuffle=False)
    trainer = training.Trainer(training.updaters.StandardUpdater(it, optimizer), (1, 'epoch'),
                               out=str(tmp_path))
    trainer.extend(ci.TracInExtension(train, test, test_indices=[0], top_k=2, plot=False,
                                      progress=False, on_error='raise'))
    trainer.run()
    report = trainer.get_extension('TracInExtension').report
    assert report.scores.shape == (1, N_TRAIN) and numpy.isfinite(report.scores).all()
    assert report.settings['learning_rates'] == [0.1]
