#!/usr/bin/env python
"""Top-k influence lists with and without RelatIF (Barshan et al. 2020) on Fashion-MNIST.

Trains a 784-100-10 MLP on a subsample of Fashion-MNIST with Chainer's Trainer, then ranks the
training images for a few test images by plain influence (I_up,loss) and by RelatIF (influence
divided by sqrt(self-influence)), on the last layer with the Exact solver. Writes one figure with
both lists per test image (``<out>/relatif_fashion_mnist.png`` or ``--figure``) and prints, over
``--n-eval`` test images, how often the lists hold high self-influence training images
(outliers) and training images of the test image's class.

    python examples/mnist/relatif_figure.py --figure docs/relatif_fashion_mnist.png
"""
import os
import sys
import time

import numpy

import chainer
import chainer.functions as F
import chainer.links as L

sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
from examples import common  # NOQA: E402
import chainer_influence as ci  # NOQA: E402
from chainer_influence import plots  # NOQA: E402


class MLP(chainer.Chain):
    def __init__(self, n_units=100, n_out=10):
        super().__init__()
        with self.init_scope():
            self.l1 = L.Linear(784, n_units)
            self.fc = L.Linear(n_units, n_out)

    def forward(self, x):
        return self.fc(F.relu(self.l1(x)))


def parse_args(argv=None):
    parser = common.make_parser(__doc__, out='result/relatif')
    common.add_data_arguments(parser, 'folder with the Fashion-MNIST IDX files (None: '
                              '/usr/share/datasets/fashion-mnist/)', n_train=60000)
    common.add_training_arguments(parser, epoch=10, batchsize=64, lr=0.05, weight_decay=1e-3)
    group = parser.add_argument_group('influence')
    group.add_argument('--damping', type=float, default=1e-3, help='solve (H + damping I)')
    group.add_argument('--test-indices', type=int, nargs='+', default=[2, 0, 1],
                       help='test images shown in the figure')
    group.add_argument('--n-eval', type=int, default=100,
                       help='test images (the first n) for the printed summary')
    group.add_argument('--top-k', type=int, default=5,
                       help='helpful and harmful training images per list, for the summary')
    group.add_argument('--show-k', type=int, default=4,
                       help='helpful and harmful training images per list in the figure')
    group.add_argument('--n-outliers', type=int, default=50,
                       help='the training images with the largest self-influence count as '
                            'outliers in the summary')
    group.add_argument('--figure', default=None,
                       help='the PNG to write (None: <out>/relatif_fashion_mnist.png)')
    parser.set_defaults(train_size=5000)
    return parser.parse_args(argv)


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
    device = common.setup(args)
    try:
        train, test = ci.load_fashion_mnist(args.data_dir)
    except ci.DataNotFoundError as e:
        sys.exit('error: {}'.format(e))
    x, t = chainer.dataset.concat_examples(common.first(train, args.train_size))
    train = chainer.datasets.TupleDataset(x, t)
    model = L.Classifier(MLP())
    model.to_device(device)
    common.make_trainer(model, train, None, args, device).run()
    n_eval = max(args.n_eval, max(args.test_indices) + 1)
    xt, tt = chainer.dataset.concat_examples(test[:n_eval], device)
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        accuracy = float(F.accuracy(model.predictor(xt), tt).array)
    print('trained {} epochs on {} images in {:.0f} s; accuracy on {} test images {:.3f}'.format(
        args.epoch, len(train), time.time() - start, n_eval, accuracy))

    calc = ci.InfluenceFunctions(model, train, params=['/fc/W', '/fc/b'],
                                 solver=ci.ExactSolver(), weight_decay=args.weight_decay,
                                 damping=args.damping, batch_size=1000,
                                 progress=not args.no_progress)
    plain = calc.influence((xt, tt))
    relatif = calc.influence((xt, tt), normalize='relatif')  # self-influence: one more pass
    print('influence and RelatIF for {} test images: {:.0f} s since start'.format(
        n_eval, time.time() - start))
    outliers = numpy.argsort(-calc.self_influence())[:args.n_outliers]
    print('top-{} lists over {} test images; outliers = the {} largest self-influences'.format(
        args.top_k, n_eval, args.n_outliers))
    tt = chainer.backend.CpuDevice().send(tt)
    for name, scores in (('influence', plain), ('RelatIF', relatif)):
        summary(name, scores, tt, t, outliers, args.top_k)

    shown = numpy.asarray(args.test_indices)
    names = list(ci.CLASS_NAMES['fashion-mnist'])
    reports = {name: ci.InfluenceReport(scores[shown], shown, tt[shown], t, top_k=args.show_k,
                                        class_names=names)
               for name, scores in (('influence', plain), ('RelatIF', relatif))}
    path = args.figure or os.path.join(args.out, 'relatif_fashion_mnist.png')
    plots.plot_ranking_comparison(reports, test, train, path)
    print('wrote {} ({:.0f} s in all)'.format(path, time.time() - start))


if __name__ == '__main__':
    main()
