"""What the example scripts share: the same flags for the same things, seeding, and the Trainer
set-up of Chainer's own examples (MomentumSGD with a WeightDecay hook, SerialIterators,
StandardUpdater, Trainer, Evaluator, LogReport, PrintReport, ProgressBar).

Not a script. A script under ``examples/<name>/`` imports it with the repository root on
``sys.path`` (the scripts put it there, so they also run without PYTHONPATH)::

    sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
    from examples import common  # NOQA: E402

    def parse_args(argv=None):
        parser = common.make_parser(__doc__, out='result/mine')   # --seed --out --device ...
        common.add_data_arguments(parser, 'folder of ...', n_train=60000)  # --train-size ...
        common.add_training_arguments(parser, epoch=5, weight_decay=1e-4)  # --epoch --batchsize
        common.add_influence_arguments(parser)                     # --test-indices --top-k ...
        parser.add_argument(...)                                  # the script's own flags
        return parser.parse_args(argv)

    def main(argv=None):
        args = parse_args(argv)
        device = common.setup(args)              # chainer.get_device + every random seed
        model = ...; model.to_device(device)
        trainer = common.make_trainer(model, train, test, args, device)
        trainer.extend(ci.InfluenceExtension(..., progress=not args.no_progress))
        common.add_print_report(trainer, ['epoch', 'main/loss', ...], args)
        trainer.run()

The shared flags (every script: ``--seed``, ``--out/-o``, ``--no-progress``; every script that
runs on a Chainer device: ``--device/-d``; every script that trains with a Trainer:
``--epoch/-e``, ``--batchsize/-b``, ``--lr``, ``--weight-decay``) and their defaults show in
``--help``.
"""
import argparse
import json
import os
import random

import numpy

import chainer
from chainer import training
from chainer.training import extensions


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` keeps the description's layout (the script's docstring) and shows each option's
    default."""


def make_parser(description, out, device=True, seed=0):
    """An ``ArgumentParser`` (:class:`HelpFormatter`) with the flags every script shares.

    ``--seed`` (default ``seed``): see :func:`set_random_seed`; ``--out/-o`` (default ``out``):
    output folder; ``--no-progress``: no progress bars (``args.no_progress``); with ``device``,
    ``--device/-d`` (default ``@numpy``): a Chainer device spec.
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    parser.add_argument('--seed', type=int, default=seed,
                        help='seed of every random draw: Python\'s random, numpy\'s global '
                             'random state (initial weights, dropout on the CPU), CuPy\'s on a '
                             'GPU, the minibatch order; the same seed gives the same results on '
                             'the same machine')
    parser.add_argument('--out', '-o', default=out, help='output folder')
    if device:
        parser.add_argument('--device', '-d', default='@numpy',
                            help='Chainer device spec, e.g. @numpy or @cupy:0')
    parser.add_argument('--no-progress', action='store_true',
                        help='no progress bars')
    return parser


def add_data_arguments(parser, data_dir_help, n_train, n_test=None):
    """Add an argument group 'data' with ``--data-dir`` (help ``data_dir_help``) and
    ``--train-size`` (of the ``n_train`` training examples) and, when ``n_test`` is given,
    ``--test-size``; cut the datasets with :func:`first`."""
    group = parser.add_argument_group('data')
    group.add_argument('--data-dir', default=None, help=data_dir_help)
    group.add_argument('--train-size', type=int, default=None,
                       help='use only the first N training examples (None: all {:,}); '
                            'influence costs grow linearly with N'.format(n_train))
    if n_test is not None:
        group.add_argument('--test-size', type=int, default=None,
                           help='evaluate on the first N test examples only (None: all '
                                '{:,})'.format(n_test))
    return group


def first(dataset, n):
    """The first ``n`` examples of ``dataset`` (all of them when ``n`` is None or 0)."""
    if not n:
        return dataset
    return chainer.datasets.SubDataset(dataset, 0, min(n, len(dataset)))


def add_training_arguments(parser, epoch, batchsize=128, lr=0.05, weight_decay=1e-4):
    """Add the flags of :func:`make_trainer` to ``parser`` (an argument group).

    ``--epoch/-e`` (``args.epoch``; ``--epochs`` is a hidden alias), ``--batchsize/-b``,
    ``--lr`` (MomentumSGD) and ``--weight-decay`` (WeightDecay hook, which InfluenceExtension
    reads from the optimizer).
    """
    group = parser.add_argument_group('training')
    group.add_argument('--epoch', '-e', type=int, default=epoch, help='training epochs')
    group.add_argument('--epochs', type=int, dest='epoch', default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)  # the name used before; kept for old commands
    group.add_argument('--batchsize', '-b', type=int, default=batchsize,
                       help='training minibatch size')
    group.add_argument('--lr', type=float, default=lr, help='MomentumSGD learning rate')
    group.add_argument('--weight-decay', type=float, default=weight_decay,
                       help='WeightDecay optimizer hook; influence reads it from there')
    return group


def add_influence_arguments(parser, test_indices=tuple(range(8)), top_k=6,
                            influence_batchsize=256):
    """Add the flags of an ``InfluenceExtension`` that the training examples share:
    ``--test-indices``, ``--top-k``, ``--influence-batchsize``, ``--no-self-influence``."""
    group = parser.add_argument_group('influence')
    group.add_argument('--test-indices', type=int, nargs='+', default=list(test_indices),
                       help='test images to explain')
    group.add_argument('--top-k', type=int, default=top_k,
                       help='helpful and harmful training images kept per test image')
    group.add_argument('--influence-batchsize', type=int, default=influence_batchsize,
                       help='examples per pass when computing Hessian-vector products and '
                            'scores (larger is faster, uses more memory)')
    group.add_argument('--no-self-influence', action='store_true',
                       help='skip self-influence (mislabel candidates) over the training set')
    return group


def set_random_seed(seed, device=None):
    """Seed Python's ``random``, numpy's global ``RandomState`` (Chainer's initialisers and
    CPU dropout draw from it) and, on a CuPy device, CuPy's generator, with cuDNN made
    deterministic (``chainer.global_config.cudnn_deterministic``)."""
    random.seed(seed)
    numpy.random.seed(seed)
    if isinstance(device, chainer.backend.GpuDevice):
        device.use()
        chainer.backends.cuda.cupy.random.seed(seed)
        chainer.global_config.cudnn_deterministic = True


def setup(args):
    """``chainer.get_device(args.device)``, made current, after :func:`set_random_seed`
    (``args.seed``)."""
    device = chainer.get_device(args.device)
    set_random_seed(args.seed, device)
    device.use()
    return device


def make_order_sampler(seed):
    """A ``ShuffleOrderSampler`` with its own ``RandomState(seed)``: the minibatch order then
    depends on the seed only, not on what else drew from numpy's global state before."""
    return chainer.iterators.ShuffleOrderSampler(numpy.random.RandomState(seed))


def make_optimizer(model, args):
    """MomentumSGD (``args.lr``) set up on ``model``, with a ``WeightDecay(args.weight_decay)``
    hook (InfluenceExtension reads the weight decay from there). Wrap it (e.g. ChainerMN's
    ``create_multi_node_optimizer``) and pass it to :func:`make_trainer`."""
    optimizer = chainer.optimizers.MomentumSGD(lr=args.lr)
    optimizer.setup(model)
    optimizer.add_hook(chainer.optimizer_hooks.WeightDecay(args.weight_decay))
    return optimizer


def make_trainer(model, train, test, args, device, optimizer=None, eval_batchsize=1000,
                 log=True):
    """A ``Trainer`` for ``args.epoch`` epochs writing into ``args.out``.

    Minibatches of ``args.batchsize`` in an order drawn from ``args.seed``
    (:func:`make_order_sampler`), the ``optimizer`` (default: :func:`make_optimizer`), an
    ``Evaluator`` on ``test`` in batches of ``eval_batchsize`` (none when ``test`` is None, e.g.
    to add a multi-node one yourself) and, with ``log`` (False on ChainerMN's non-zero ranks), a
    ``LogReport``. Add the reporting extensions with :func:`add_print_report` after your own ones.
    """
    if optimizer is None:
        optimizer = make_optimizer(model, args)
    train_iter = chainer.iterators.SerialIterator(
        train, args.batchsize, order_sampler=make_order_sampler(args.seed))
    updater = training.updaters.StandardUpdater(train_iter, optimizer, device=device)
    trainer = training.Trainer(updater, (args.epoch, 'epoch'), out=args.out)
    if test is not None:
        test_iter = chainer.iterators.SerialIterator(test, eval_batchsize, repeat=False,
                                                     shuffle=False)
        trainer.extend(extensions.Evaluator(test_iter, model, device=device))
    if log:
        trainer.extend(extensions.LogReport())
    return trainer


def add_print_report(trainer, entries, args):
    """``PrintReport(entries)`` and, unless ``args.no_progress``, a ``ProgressBar``."""
    trainer.extend(extensions.PrintReport(entries))
    if not args.no_progress:
        trainer.extend(extensions.ProgressBar())


def write_json(path, data):
    """Write ``data`` to ``path`` as indented JSON; numpy arrays and scalars become lists and
    numbers. Returns ``path``."""
    with open(path, 'w') as f:
        json.dump(data, f, indent=1, default=_jsonable)
    return path


def _jsonable(value):
    if isinstance(value, numpy.ndarray):
        return value.tolist()
    if isinstance(value, numpy.generic):
        return value.item()
    raise TypeError('cannot write {!r} to JSON'.format(type(value)))


def print_influence_outcome(out, name='influence'):
    """Say where the extension's results are, or, when its run failed (``on_error='warn'``),
    where the error is (``<out>/<name>/error.json``)."""
    folder = os.path.join(out, name)
    error = os.path.join(folder, 'error.json')
    if os.path.exists(error):
        print('influence failed (training finished and its log is kept): see {}'.format(error))
    else:
        print('influence rankings and figures: {}/'.format(folder))
