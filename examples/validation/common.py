"""Plumbing shared by the validation scripts: common options, data subsets, models, results.

Not a script; the scripts next to it import it (their folder is on ``sys.path`` when run, and they
put the repository root there too). It builds on ``examples/common.py``, which holds what all
example scripts share.
"""
import argparse
import os
import time

import numpy

import chainer
import chainer.functions as F
import chainer.links as L

import chainer_influence as ci
from chainer_influence.batches import get_batch
from examples import common as shared
from examples.common import set_random_seed  # NOQA: F401  (for the scripts)

DIGITS_TEST = 500  # digits: size of the fixed test split (seed 0); the rest is the training pool


def make_parser(description, out, n_train, classes=None, dataset='fashion-mnist'):
    """An ArgumentParser with the flags of all examples (``--seed``, ``--out/-o``,
    ``--no-progress``; no ``--device``: these experiments run in float64 on the CPU, fitted by
    scipy's L-BFGS) and those every validation script shares; defaults shown in ``--help``."""
    parser = shared.make_parser(description, out, device=False)
    parser.add_argument('--progress', action='store_true',
                        help=argparse.SUPPRESS)  # the old opt-in; progress bars are now the default
    parser.add_argument('--dataset', choices=('fashion-mnist', 'digits'), default=dataset,
                        help='fashion-mnist: 28x28 images from IDX files (Debian package '
                        'dataset-fashion-mnist); digits: scikit-learn\'s bundled 8x8 digits '
                        '(needs scikit-learn installed)')
    parser.add_argument('--data-dir', default=None,
                        help='folder of the Fashion-MNIST IDX files; None: '
                        '/usr/share/datasets/fashion-mnist')
    parser.add_argument('--classes', type=_class_list, default=classes,
                        help='comma-separated class ids to keep, relabelled 0..K-1 in the given '
                        'order; None: all classes')
    parser.add_argument('--n-train', type=int, default=n_train,
                        help='training examples drawn at random (--seed) from the training split')
    parser.add_argument('--weight-decay', type=float, default=0.01,
                        help='L2 term weight_decay/2 ||theta||^2 of the training objective')
    return parser


def _class_list(text):
    return [int(c) for c in text.split(',')]


def load_data(args):
    """``((x, t), (x_test, t_test))``: float64 inputs flattened to (N, D), int32 labels.

    ``args.n_train`` training examples drawn at random (``args.seed``) from the training split,
    restricted to ``args.classes`` (relabelled 0..K-1); the test split holds all of its examples
    of those classes.
    """
    if args.dataset == 'fashion-mnist':
        train, test = ci.load_fashion_mnist(args.data_dir)
    else:
        digits = ci.load_digits()
        train, test = ci.train_test_split(digits, DIGITS_TEST, seed=0)
    x, t = _select(train, args.classes)
    if args.n_train > len(x):
        raise SystemExit('--n-train {} exceeds the {} training examples available'.format(
            args.n_train, len(x)))
    keep = numpy.sort(numpy.random.RandomState(args.seed).permutation(len(x))[:args.n_train])
    return (x[keep], t[keep]), _select(test, args.classes)


def _select(dataset, classes):
    x, t = get_batch(dataset, numpy.arange(len(dataset)))
    x = x.reshape(len(x), -1).astype(numpy.float64)
    if classes is None:
        return x, t.astype(numpy.int32)
    keep = numpy.isin(t, classes)
    relabel = {c: k for k, c in enumerate(classes)}
    return x[keep], numpy.array([relabel[int(c)] for c in t[keep]], dtype=numpy.int32)


def linear_model(n_in, n_out):
    """A float64 ``L.Linear`` without bias, initialised at zero (logistic regression, SVM)."""
    with chainer.using_config('dtype', numpy.float64):
        return L.Linear(n_in, n_out, nobias=True, initialW=chainer.initializers.Zero())


class MLP(chainer.Chain):
    """(N, n_in) -> logits (N, n_out) through one tanh hidden layer (smooth, for L-BFGS)."""

    def __init__(self, n_in, n_hidden, n_out):
        super().__init__()
        with self.init_scope():
            self.l1 = L.Linear(n_in, n_hidden)
            self.l2 = L.Linear(n_hidden, n_out)

    def forward(self, x):
        return self.l2(F.tanh(self.l1(x)))


class SmallCNN(chainer.Chain):
    """(N, 784) -> logits (N, n_out): conv 5x5/2 -> channels[0], tanh, conv 3x3/2 -> channels[1],
    tanh, linear; 2,410 parameters with the default channels (4, 8)."""

    def __init__(self, n_out=10, channels=(4, 8)):
        super().__init__()
        with self.init_scope():
            self.conv1 = L.Convolution2D(1, channels[0], ksize=5, stride=2)
            self.conv2 = L.Convolution2D(channels[0], channels[1], ksize=3, stride=2)
            self.fc = L.Linear(channels[1] * 5 * 5, n_out)

    def forward(self, x):
        h = F.reshape(x, (-1, 1, 28, 28))
        h = F.tanh(self.conv1(h))
        h = F.tanh(self.conv2(h))
        return self.fc(h)


# ---- influence methods: solver x curvature ---------------------------------------------------
CURVATURES = {'h': 'hessian', 'gn': 'gauss-newton'}
SOLVERS = ('exact', 'cg', 'kfac', 'ekfac')
METHODS = tuple('{}-{}'.format(s, c) for s in SOLVERS for c in CURVATURES
                if not (s in ('kfac', 'ekfac') and c == 'h'))   # K-FAC is a Gauss-Newton model


def add_method_options(parser, methods):
    """--methods (solver-curvature names, the first picks the removals), --damping, --fisher."""
    parser.add_argument('--methods', nargs='+', choices=METHODS, default=list(methods),
                        help='influence methods <solver>-<curvature> (h: Hessian, gn: '
                        'Gauss-Newton), all with the same damping and weight decay')
    parser.add_argument('--damping', type=float, default=0.01, help='curvature + damping I')
    parser.add_argument('--fisher', choices=('sampled', 'exact'), default='sampled',
                        help='K-FAC/EK-FAC output-gradient statistics')
    parser.add_argument('--cg-tol', type=float, default=1e-8, help='CG relative residual')


def make_calc(model, train, method, args, loss_fn=ci.softmax_cross_entropy_loss):
    """An ``InfluenceFunctions`` for ``method`` ('<solver>-<curvature>', see :data:`METHODS`)."""
    solver, curvature = method.split('-')
    progress = not args.no_progress
    make = {'exact': lambda: ci.ExactSolver(),
            'cg': lambda: ci.CGSolver(max_iter=2000, tol=args.cg_tol, progress=progress),
            'kfac': lambda: ci.KFACSolver(fisher=args.fisher, seed=args.seed, progress=progress),
            'ekfac': lambda: ci.EKFACSolver(fisher=args.fisher, seed=args.seed,
                                          progress=progress)}[solver]
    return ci.InfluenceFunctions(model, train, loss_fn, make(), curvature=CURVATURES[curvature],
                                 weight_decay=args.weight_decay, damping=args.damping,
                                 progress=progress)


def influence_scores(model, train, tests, args, loss_fn=ci.softmax_cross_entropy_loss):
    """``(scores, seconds)``: method -> (M, N) influence of ``args.methods``, and its wall time."""
    scores, seconds = {}, {}
    for method in args.methods:
        start = time.time()
        scores[method] = make_calc(model, train, method, args, loss_fn).influence(tests)
        seconds[method] = round(time.time() - start, 2)
    return scores, seconds


def pick_test_points(n_available, n_test, seed, among=None):
    """``n_test`` distinct test indices drawn with ``RandomState(seed)`` (from ``among``)."""
    pool = numpy.arange(n_available) if among is None else numpy.asarray(among)
    return numpy.sort(numpy.random.RandomState(seed).choice(pool, n_test, replace=False))


class Results(object):
    """Collects results, times the run, writes ``results.json`` under ``out``."""

    def __init__(self, args):
        self.out = args.out
        os.makedirs(self.out, exist_ok=True)
        self.data = {'settings': vars(args)}
        self.start = time.time()

    def path(self, name):
        return os.path.join(self.out, name)

    def write(self):
        self.data['wall_time_s'] = round(time.time() - self.start, 1)
        return shared.write_json(self.path('results.json'), self.data)


def print_summary(title, lines, results):
    """One screen: a title, the result lines, the wall time and where the files are."""
    print('=' * 72)
    print(title)
    print('-' * 72)
    for line in lines:
        print(line)
    print('-' * 72)
    print('wall time {:.0f} s; results in {}'.format(time.time() - results.start, results.out))
