#!/usr/bin/env python
"""Train on (Fashion-)MNIST with Chainer's Trainer and rank training images by influence.

After training, ``InfluenceExtension`` writes, under ``<out>/influence/``: ``rankings.json``,
``rankings.csv``, ``influence.npz``, ``top_influential.png`` (each test image beside its most
helpful and most harmful training images) and ``self_influence.png``; ``<out>/log`` holds the
training log with the ``influence/...`` entries. With ``--tracin``, ``TracInExtension`` adds
TracIn scores at the end of every epoch and writes the same files under ``<out>/tracin/``;
``--relatif`` ranks influence by RelatIF.

    python examples/mnist/train_mnist.py --dataset fashion-mnist --arch mlp
    python examples/mnist/train_mnist.py --train-size 10000 --tracin --relatif

--seed fixes the initial weights and the minibatch order: a rerun on the same machine writes
the same rankings.json.
"""
import os
import sys

import chainer
import chainer.functions as F
import chainer.links as L

sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
import chainer_influence as ci  # NOQA: E402
from examples import common  # NOQA: E402


class LogisticRegression(chainer.Chain):
    def __init__(self, n_out=10):
        super().__init__()
        with self.init_scope():
            self.fc = L.Linear(None, n_out)

    def forward(self, x):
        return self.fc(x)


class MLP(chainer.Chain):
    def __init__(self, n_units=100, n_out=10):
        super().__init__()
        with self.init_scope():
            self.l1 = L.Linear(None, n_units)
            self.l2 = L.Linear(n_units, n_units)
            self.fc = L.Linear(n_units, n_out)

    def forward(self, x):
        return self.fc(F.relu(self.l2(F.relu(self.l1(x)))))


class CNN(chainer.Chain):
    def __init__(self, n_out=10):
        super().__init__()
        with self.init_scope():
            self.conv1 = L.Convolution2D(1, 16, ksize=5, pad=2)
            self.conv2 = L.Convolution2D(16, 32, ksize=5, pad=2)
            self.l1 = L.Linear(None, 64)
            self.fc = L.Linear(64, n_out)

    def forward(self, x):
        h = F.max_pooling_2d(F.relu(self.conv1(x)), 2)
        h = F.max_pooling_2d(F.relu(self.conv2(h)), 2)
        return self.fc(F.relu(self.l1(h)))


ARCHS = {'logreg': LogisticRegression, 'mlp': MLP, 'cnn': CNN}


def make_parser(description=__doc__, out='result/mnist'):
    """The flags of this script (train_mnist_mn.py adds its own to them)."""
    parser = common.make_parser(description, out=out)
    data = common.add_data_arguments(
        parser, 'folder with the Fashion-MNIST IDX files (None: '
        '/usr/share/datasets/fashion-mnist/)', n_train=60000)
    data.add_argument('--dataset', choices=('fashion-mnist', 'mnist'), default='fashion-mnist',
                      help='fashion-mnist reads IDX files from --data-dir or Debian\'s package '
                           'dataset-fashion-mnist; mnist uses Chainer\'s downloader (internet)')
    training_group = common.add_training_arguments(parser, epoch=5, batchsize=128, lr=0.05,
                                                   weight_decay=1e-4)
    training_group.add_argument('--arch', choices=sorted(ARCHS), default='mlp',
                                help='logreg: multinomial logistic regression; mlp: '
                                     '784-100-100-10; cnn: two 5x5 conv layers with pooling')
    influence = common.add_influence_arguments(parser, influence_batchsize=2000)
    influence.add_argument('--influence-params', choices=('last', 'all'), default=None,
                           help='last: only the output layer (the paper\'s choice for '
                                'Inception; convex, exact solver); all: every parameter '
                                '(None: all for logreg, last otherwise)')
    influence.add_argument('--solver', choices=sorted(SOLVERS), default='auto',
                           help='inverse-curvature solver; auto: Exact on the Hessian for a small '
                                'convex scope (the last layer, logreg), EK-FAC on the '
                                'Gauss-Newton otherwise')
    influence.add_argument('--curvature', choices=('hessian', 'gauss-newton'), default=None,
                           help='curvature for exact/cg/lissa (None: chosen with the solver)')
    influence.add_argument('--damping', type=float, default=None,
                           help='solve (H + damping I); None: the solver\'s default rule')
    influence.add_argument('--relatif', action='store_true',
                           help='rank influence by RelatIF (influence / sqrt(self-influence))')
    influence.add_argument('--tracin', action='store_true',
                           help='also rank by TracIn, accumulated online at the end of every '
                                'epoch (same parameters as influence), under <out>/tracin/')
    return parser


def parse_args(argv=None):
    return make_parser().parse_args(argv)


def load(args):
    try:
        if args.dataset == 'mnist':
            train, test = ci.load_mnist(ndim=3 if args.arch == 'cnn' else 1)
        else:
            train, test = ci.load_fashion_mnist(args.data_dir, ndim=3 if args.arch == 'cnn' else 1)
    except ci.DataNotFoundError as e:
        sys.exit('error: {}'.format(e))
    return common.first(train, args.train_size), test


SOLVERS = {'auto': lambda: None, 'exact': ci.ExactSolver, 'cg': ci.CGSolver,
           'lissa': ci.LiSSASolver, 'kfac': ci.KFACSolver, 'ekfac': ci.EKFACSolver}


def main(argv=None):
    args = parse_args(argv)
    device = common.setup(args)
    train, test = load(args)
    model = L.Classifier(ARCHS[args.arch]())
    with chainer.using_config('train', False):
        model.predictor(test[0][0][None])  # initialise lazy parameters
    model.to_device(device)

    trainer = common.make_trainer(model, train, test, args, device, eval_batchsize=1000)
    scope = args.influence_params or ('all' if args.arch == 'logreg' else 'last')
    params = None if scope == 'all' else ['/fc/W', '/fc/b']
    trainer.extend(ci.InfluenceExtension(
        train, test, test_indices=args.test_indices, top_k=args.top_k,
        solver=SOLVERS[args.solver](), curvature=args.curvature, params=params,
        damping=args.damping,
        self_influence=not args.no_self_influence, batch_size=args.influence_batchsize,
        class_names=list(ci.CLASS_NAMES[args.dataset]), progress=not args.no_progress,
        normalize='relatif' if args.relatif else None))
    if args.tracin:
        trainer.extend(ci.TracInExtension(
            train, test, test_indices=args.test_indices, top_k=args.top_k, params=params,
            batch_size=args.influence_batchsize, class_names=list(ci.CLASS_NAMES[args.dataset]),
            progress=not args.no_progress), trigger=(1, 'epoch'))
    common.add_print_report(trainer, [
        'epoch', 'main/loss', 'main/accuracy', 'validation/main/loss',
        'validation/main/accuracy', 'influence/time', 'tracin/time', 'elapsed_time'], args)
    trainer.run()
    common.print_influence_outcome(args.out)
    if args.tracin:
        print('TracIn rankings and figures: {}/tracin/'.format(args.out))


if __name__ == '__main__':
    main()
