"""The training-set attack example (examples/attack/): its first-order prediction against exact
retraining, the attack loop, the figure and the script's --help.

Binary digits task (3 vs 8, N=300) under a fixed random tanh feature layer, so that the pixel-space
perturbation influence goes through the chain rule of a nonlinear extractor as in the example.
"""
import os
import subprocess
import sys

import numpy
import pytest

import chainer
import chainer.functions as F
import chainer.links as L

from chainer_influence import plots
from chainer_influence.retraining import fit_lbfgs

from digits_models import digits

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
EXAMPLE_DIR = os.path.join(ROOT, 'examples', 'attack')
sys.path.insert(0, EXAMPLE_DIR)
import training_set_attack  # NOQA: E402

WEIGHT_DECAY = 0.01
PNG = b'\x89PNG\r\n\x1a\n'


class RandomTanhFeatures(chainer.Chain):
    def __init__(self):
        super().__init__()
        with self.init_scope():
            self.l = L.Linear(64, 16, initialW=chainer.initializers.Normal(0.5))

    def forward(self, x):
        return F.tanh(self.l(x))


@pytest.fixture(scope='module')
def setup():
    """(attack, x_test, t_test, correctly classified targets by increasing margin): the top
    fitted to convergence."""
    (x, t), (x_test, t_test) = digits(300, 100, classes=[3, 8])
    with chainer.using_config('dtype', numpy.float64):
        numpy.random.seed(0)
        extractor = RandomTanhFeatures()
        top = L.Linear(16, 2, initialW=chainer.initializers.Zero())
    features = training_set_attack.extract_features(extractor, x)
    assert fit_lbfgs(top, training_set_attack.LOSS, (features, t), WEIGHT_DECAY) < 1e-9
    margins = training_set_attack.margins(
        top, training_set_attack.extract_features(extractor, x_test), t_test)
    correct = numpy.flatnonzero(margins > 0)
    targets = correct[numpy.argsort(margins[correct])]
    attack = training_set_attack.TrainingSetAttack(
        extractor, top, x, t, WEIGHT_DECAY, epsilon=0.1, step_size=0.05, max_steps=3, gtol=1e-10)
    return attack, x_test, t_test, targets


def _retrained_change(attack, x_test, t_test, indices, delta):
    """Exact change of the target's loss after x[indices] += delta and retraining."""
    x = attack.x_train.copy()
    x[indices] += delta
    top, _ = attack.retrained(x, indices)
    return (attack.target_loss(top, x_test, t_test)
            - attack.target_loss(attack.top, x_test, t_test))


def test_first_order_prediction_matches_retraining(setup):
    """(1/N) <I_pert,loss, delta> against the retrained change, for delta = eta sign(I_pert).

    The linearisation's error is O(eta^2), so its relative error is O(eta): it must be small and
    halve (up to higher-order terms) with eta. A wrong sign, a wrong 1/N or a wrong chain rule
    through the extractor would leave an error that does not shrink. Retraining stops at
    max |grad R| < 1e-10 (loss error ~1e-9, against predicted changes ~1e-3).
    """
    attack, x_test, t_test, targets = setup
    m = targets[0]
    indices = attack.rank(x_test[m], t_test[m])[:1]
    influence = attack.pixel_influence(x_test[m], t_test[m], indices)
    errors = []
    for eta in (2e-3, 1e-3):
        delta = eta * numpy.sign(influence)
        predicted = (influence * delta).sum() / attack.n_train
        actual = _retrained_change(attack, x_test[m], t_test[m], indices, delta)
        assert predicted > 0 and actual > 0  # the signed step raises the target's loss
        errors.append(abs(actual - predicted) / predicted)
    assert errors[1] < 1e-2, errors
    assert errors[1] < errors[0] / 1.6, errors
    # the opposite step lowers it by about as much
    down = _retrained_change(attack, x_test[m], t_test[m], indices, -delta)
    numpy.testing.assert_allclose(down, -predicted, rtol=2e-2)


def test_ranking_is_by_first_order_gain(setup):
    attack, x_test, t_test, targets = setup
    m = targets[0]
    ranking = attack.rank(x_test[m], t_test[m])
    gain = numpy.abs(attack.pixel_influence(x_test[m], t_test[m], ranking)).sum(axis=1)
    assert sorted(ranking.tolist()) == list(range(attack.n_train))
    assert (numpy.diff(gain) <= 1e-12 * gain[0]).all()


def test_attack_raises_the_target_loss_within_the_box(setup):
    """A target of margin ~0.66 is not flipped by two images within 3 steps, but every step
    raises its retrained loss, far more than a tiny first-order step does."""
    attack, x_test, t_test, targets = setup
    m = targets[5]
    clean = attack.x_train.copy()
    indices = attack.rank(x_test[m], t_test[m])[:2]
    result = attack.attack(x_test[m], t_test[m], indices)
    losses, predicted = numpy.array(result['losses']), numpy.array(result['predicted_changes'])
    assert result['steps'] == 3 and not result['success']
    assert (numpy.diff(losses) > 0).all(), losses  # every step raised the retrained loss
    assert (predicted > 0).all()
    # a large attack moves the loss far more than a tiny first-order step
    tiny = _retrained_change(attack, x_test[m], t_test[m], indices[:1], 1e-3 * numpy.sign(
        attack.pixel_influence(x_test[m], t_test[m], indices[:1])))
    assert losses[-1] - losses[0] > 20 * tiny
    assert (numpy.array(result['margins'])[1:] < result['margins'][0]).all()
    change = result['x'] - clean[indices]
    assert result['linf'] <= 0.1 + 1e-12 and numpy.abs(change).max() == result['linf']
    assert result['x'].min() >= 0 and result['x'].max() <= 1
    numpy.testing.assert_array_equal(attack.x_train, clean)  # the clean data are untouched


def test_attack_flips_a_borderline_target(setup):
    """The correctly classified target nearest the boundary (margin ~0.07) flips after one step
    on its most influential training image; the attack stops there."""
    attack, x_test, t_test, targets = setup
    m = targets[0]
    result = attack.attack(x_test[m], t_test[m], attack.rank(x_test[m], t_test[m])[:1])
    assert result['success'] and result['steps'] == 1
    assert result['margins'][0] > 0 > result['margins'][-1]


def test_plot_perturbations(tmp_path, setup):
    attack, x_test, t_test, _ = setup
    x = attack.x_train[:2]
    path = plots.plot_perturbations(x, numpy.clip(x + 0.05, 0, 1), str(tmp_path / 'a.png'),
                                    targets=x_test[:2], titles=['a', 'b'], epsilon=0.1)
    with open(path, 'rb') as f:
        assert f.read(8) == PNG


def test_script_help():
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, os.path.join(EXAMPLE_DIR, 'attack_fashion_mnist.py'),
                          '--help'], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for flag in ('--epsilon', '--n-perturb', '--seed', '--epoch', '--out', '--device',
                 '--no-progress', '--batchsize', '--train-size'):
        assert flag in out.stdout
    assert 'default: 0.031' in out.stdout  # ArgumentDefaultsHelpFormatter shows defaults
