"""The example scripts: every one shares the same flags with their defaults in ``--help`` (and runs
without PYTHONPATH from any folder); examples/common.py's trainer set-up; seeded runs of
examples/mnist/train_mnist.py write identical rankings, another seed different ones."""
import glob
import os
import random
import re
import subprocess
import sys

import numpy
import pytest

import chainer
import chainer.links as L

from test_datasets import fake_fashion_mnist

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'examples', 'mnist'))
from examples import common  # NOQA: E402
import train_mnist  # NOQA: E402

SCRIPTS = sorted(os.path.relpath(path, ROOT) for path in glob.glob(
    os.path.join(ROOT, 'examples', '**', '*.py'), recursive=True)
    if "if __name__ == '__main__':" in open(path).read())
# Flags of every script; the validation experiments run in float64 on the CPU (scipy's L-BFGS),
# without a Trainer, so they have no --device, --epoch or --batchsize.
SHARED = {'--seed': '0', '--out': None, '--no-progress': 'False'}
TRAINING = {'--epoch': None, '--batchsize': None, '--device': '@numpy'}
SHORT = {'--out': '-o', '--epoch': '-e', '--batchsize': '-b', '--device': '-d'}


def _run(args, cwd=ROOT, timeout=120):
    env = dict(os.environ, COLUMNS='120', OMP_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1')
    env.pop('PYTHONPATH', None)  # the scripts put the repository root on sys.path themselves
    return subprocess.run([sys.executable] + args, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _options(help_text):
    """{option string: the option's help text, whitespace collapsed} from ``--help``."""
    options, names = {}, []
    for line in help_text.splitlines():
        entry = re.match(r'^  (-\S.*?)(?: {2,}(.*))?$', line)
        if entry:
            names = re.findall(r'(?:^|, )(--?[A-Za-z][\w-]*)', entry.group(1))
            for name in names:
                options[name] = entry.group(2) or ''
        elif line.startswith('   ') and names:
            for name in names:
                options[name] += ' ' + line.strip()
        else:
            names = []
    return {name: ' '.join(text.split()) for name, text in options.items()}


def test_scripts_found():
    assert {'examples/mnist/train_mnist.py', 'examples/cifar/train_cifar.py',
            'examples/validation/loo_logreg.py'} <= set(SCRIPTS)


@pytest.mark.parametrize('script', SCRIPTS)
def test_help_lists_the_shared_flags_with_defaults(script, tmp_path):
    proc = _run([os.path.join(ROOT, script), '--help'], cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    options = _options(proc.stdout)
    wanted = dict(SHARED, **({} if script.startswith('examples/validation/') else TRAINING))
    for flag, default in wanted.items():
        assert flag in options, '{} has no {}'.format(script, flag)
        assert '(default: ' in options[flag], '{} {}: default not shown'.format(script, flag)
        if default is not None:
            assert options[flag].endswith('(default: {})'.format(default)), options[flag]
        if flag in SHORT:
            assert options.get(SHORT[flag]) == options[flag], (script, SHORT[flag])
    assert '--epochs' not in options  # the old name is accepted, not advertised


def test_epoch_flags_and_old_name():
    assert train_mnist.parse_args([]).epoch == 5
    assert train_mnist.parse_args([]).seed == 0
    assert train_mnist.parse_args(['-e', '2']).epoch == 2
    assert train_mnist.parse_args(['--epochs', '3']).epoch == 3


def _args(*argv):
    parser = common.make_parser('test', out='unused')
    common.add_training_arguments(parser, epoch=1, batchsize=4)
    return parser.parse_args(argv)


def test_make_trainer_wires_optimizer_and_extensions(tmp_path):
    args = _args('--out', str(tmp_path), '--lr', '0.1', '--weight-decay', '0.01', '--no-progress')
    model = L.Classifier(chainer.links.Linear(3, 2))
    rng = numpy.random.RandomState(0)
    data = chainer.datasets.TupleDataset(rng.randn(10, 3).astype(numpy.float32),
                                         rng.randint(0, 2, 10).astype(numpy.int32))
    trainer = common.make_trainer(model, data, data, args, chainer.get_device('@numpy'))
    common.add_print_report(trainer, ['epoch'], args)
    optimizer = trainer.updater.get_optimizer('main')
    assert isinstance(optimizer, chainer.optimizers.MomentumSGD) and optimizer.lr == 0.1
    hooks = list(optimizer._hookable._pre_update_hooks.values())
    assert [h.rate for h in hooks if isinstance(h, chainer.optimizer_hooks.WeightDecay)] == [0.01]
    assert sorted(trainer._extensions) == ['LogReport', 'PrintReport', 'validation']
    assert trainer.updater.get_iterator('main').batch_size == 4
    trainer.run()
    assert trainer.updater.epoch == 1 and os.path.exists(str(tmp_path / 'log'))


def _order(seed, noise):
    """The first epoch's minibatch order of make_trainer's iterator, after ``noise`` draws from
    numpy's global random state."""
    numpy.random.rand(noise)
    args = _args('--seed', str(seed))
    model = L.Classifier(chainer.links.Linear(1, 2))
    data = chainer.datasets.TupleDataset(numpy.arange(12, dtype=numpy.float32)[:, None],
                                         numpy.zeros(12, numpy.int32))
    trainer = common.make_trainer(model, data, None, args, chainer.get_device('@numpy'))
    iterator = trainer.updater.get_iterator('main')
    return [int(x[0][0]) for _ in range(3) for x in iterator.next()]


def test_minibatch_order_depends_on_the_seed_only():
    assert _order(0, noise=1) == _order(0, noise=5)
    assert sorted(_order(0, noise=1)) == list(range(12))
    assert _order(0, noise=1) != _order(1, noise=1)


def test_set_random_seed():
    common.set_random_seed(3)
    first = numpy.random.rand(), random.random()
    common.set_random_seed(3)
    assert (numpy.random.rand(), random.random()) == first


@pytest.fixture(scope='module')
def fashion_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp('fashion')
    fake_fashion_mnist(str(folder), n_train=120, n_test=10)
    return str(folder)


def _train_mnist(fashion_dir, out, seed):
    proc = _run([os.path.join(ROOT, 'examples', 'mnist', 'train_mnist.py'), '--data-dir',
                 fashion_dir, '--arch', 'mlp', '--epoch', '1', '--batchsize', '16',
                 '--test-indices', '0', '1', '--top-k', '3', '--influence-batchsize', '64',
                 '--no-progress', '--seed', str(seed), '--out', out])
    assert proc.returncode == 0, proc.stderr
    with open(os.path.join(out, 'influence', 'rankings.json'), 'rb') as f:
        return f.read()


def test_seeded_train_mnist_runs_write_identical_rankings(fashion_dir, tmp_path):
    first = _train_mnist(fashion_dir, str(tmp_path / 'a'), seed=0)
    assert _train_mnist(fashion_dir, str(tmp_path / 'b'), seed=0) == first
    assert _train_mnist(fashion_dir, str(tmp_path / 'c'), seed=1) != first
