#!/usr/bin/env python
"""Top-k influence lists with and without RelatIF (Barshan et al. 2020) on Fashion-MNIST.

Trains a 784-100-10 MLP on a subsample of Fashion-MNIST with Chainer's Trainer, then ranks the
training images for a few test images by plain influence (I_up,loss) and by RelatIF (influence
divided by sqrt(self-influence)), on the last layer with the Exact solver. Writes one figure with
both lists per test image and prints, over ``--n-eval`` test images, how often the lists hold
high self-influence training images (outliers) and training images of the test image's class.

    python examples/mnist/relatif_figure.py --out docs/relatif_fashion_mnist.png
"""
import argparse
import sys
import time

import numpy

import chainer
import chainer.functions as F
import chainer.links as L
from chainer import training

import chainer_influence as ci
from chainer_influence import plots


class MLP(chainer.Chain):
    def __init__(self, n_units=100, n_out=10):
        super().__init__()
        with self.init_scope():
            self.l1 = L.Linear(784, n_units)
            self.fc = L.Linear(n_units, n_out)

    def forward(self, x):
        return self.fc(F.relu(self.l1(x)))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data-dir', default=None,
                        help='Fashion-MNIST IDX files (default: /usr/share/datasets/fashion-mnist/)')
    parser.add_argument('--train-size', type=int, default=5000, help='first N training images')
    parser.add_argument('--epochs', type=int, default=10)
    parser.add_argument('--weight-decay', type=float, default=1e-3)
    parser.add_argument('--damping', type=float, default=1e-3)
    parser.add_argument('--test-indices', type=int, nargs='+', default=[2, 0, 1],
                        help='test images shown in the figure')
    parser.add_argument('--n-eval', type=int, default=100,
                        help='test images (the first n) for the printed summary')
    parser.add_argument('--top-k', type=int, default=5)
    parser.add_argument('--n-outliers', type=int, default=50,
                        help='the training images with the largest self-influence count as '
                             'outliers in the summary')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', '-o', default='relatif_fashion_mnist.png', help='the PNG')
    return parser.parse_args(argv)


def train_model(train, args):
    numpy.random.seed(args.seed)  # initializers and the iterator's shuffle
    model = L.Classifier(MLP())
    optimizer = chainer.optimizers.MomentumSGD(lr=0.05)
    optimizer.setup(model)
    optimizer.add_hook(chainer.optimizer_hooks.WeightDecay(args.weight_decay))
    iterator = chainer.iterators.SerialIterator(train, 64)
    trainer = training.Trainer(training.updaters.StandardUpdater(iterator, optimizer),
                               (args.epochs, 'epoch'), out='/tmp')
    trainer.run()
    return model


def summary(name, scores, test_labels, train_labels, outliers, top_k):
    ranked = ci.top_influential(scores, top_k)
    for kind in ('helpful', 'harmful'):
        ids = ranked[kind]
        print('{:9s} {:8s} distinct {:4d}/{:4d}  outliers {:5.1%}  same class as test {:5.1%}'
              .format(name, kind, len(set(ids.ravel())), ids.size,
                      numpy.isin(ids, outliers).mean(),
                      (train_labels[ids] == test_labels[:, None]).mean()))


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    try:
        train, test = ci.load_fashion_mnist(args.data_dir)
    except ci.DataNotFoundError as e:
        sys.exit('error: {}'.format(e))
    x, t = chainer.dataset.concat_examples(train[:args.train_size])
    train = chainer.datasets.TupleDataset(x, t)
    model = train_model(train, args)
    n_eval = max(args.n_eval, max(args.test_indices) + 1)
    xt, tt = chainer.dataset.concat_examples(test[:n_eval])
    with chainer.using_config('train', False):
        accuracy = float(F.accuracy(model.predictor(xt), tt).array)
    print('trained {} epochs on {} images in {:.0f} s; accuracy on {} test images {:.3f}'.format(
        args.epochs, len(train), time.time() - start, n_eval, accuracy))

    calc = ci.InfluenceFunctions(model, train, params=['/fc/W', '/fc/b'],
                                 solver=ci.ExactSolver(), weight_decay=args.weight_decay,
                                 damping=args.damping, batch_size=1000, progress=False)
    plain = calc.influence((xt, tt))
    relatif = calc.influence((xt, tt), normalize='relatif')  # self-influence: one more pass
    print('influence and RelatIF for {} test images: {:.0f} s since start'.format(
        n_eval, time.time() - start))
    outliers = numpy.argsort(-calc.self_influence())[:args.n_outliers]
    print('top-{} lists over {} test images; outliers = the {} largest self-influences'.format(
        args.top_k, n_eval, args.n_outliers))
    for name, scores in (('influence', plain), ('RelatIF', relatif)):
        summary(name, scores, tt, t, outliers, args.top_k)

    shown = numpy.asarray(args.test_indices)
    names = list(ci.CLASS_NAMES['fashion-mnist'])
    reports = {name: ci.InfluenceReport(scores[shown], shown, tt[shown], t, top_k=args.top_k,
                                        class_names=names)
               for name, scores in (('influence', plain), ('RelatIF', relatif))}
    plots.plot_ranking_comparison(reports, test, train, args.out)
    print('wrote {} ({:.0f} s in all)'.format(args.out, time.time() - start))


if __name__ == '__main__':
    main()
