"""Koh & Liang (2017) Fig. 2 right: influence against leave-one-out retraining for a small CNN.

A float64 CNN of 2,410 parameters (conv 5x5/2 -> 4 channels, tanh, conv 3x3/2 -> 8 channels, tanh,
linear 200 -> 10) is trained on a Fashion-MNIST subset with weight decay by full-batch L-BFGS until
max |gradient| < --gtol. Influence uses CG on H + damping I. For each test point the --n-remove
training examples of largest |influence| are removed one at a time and the network is retrained
from the trained parameters for a fixed budget of steps: --retrain lbfgs runs at most
--retrain-steps full-batch L-BFGS iterations (stopping earlier below --gtol), --retrain sgd runs
exactly --retrain-steps momentum-SGD steps (the paper's way). The measured change of the test loss
is compared with -influence/N.

The network is not convex: at the trained parameters H has eigenvalues far below the weight decay,
so the result depends on the damping and on how far retraining goes (see RESULTS.md).
"""
import argparse
import os
import sys

import numpy

import chainer
import chainer.functions as F
import chainer.links as L

sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
import chainer_influence as ci  # NOQA: E402
from chainer_influence import plots, validation  # NOQA: E402
from chainer_influence.retraining import fit_lbfgs  # NOQA: E402

import common  # NOQA: E402

LOSS = ci.softmax_cross_entropy_loss


class SmallCNN(chainer.Chain):
    """(N, 784) -> logits (N, 10) through two strided tanh convolutions and a linear layer."""

    def __init__(self, n_out=10):
        super().__init__()
        with self.init_scope():
            self.conv1 = L.Convolution2D(1, 4, ksize=5, stride=2)
            self.conv2 = L.Convolution2D(4, 8, ksize=3, stride=2)
            self.fc = L.Linear(8 * 5 * 5, n_out)

    def forward(self, x):
        h = F.reshape(x, (-1, 1, 28, 28))
        h = F.tanh(self.conv1(h))
        h = F.tanh(self.conv2(h))
        return self.fc(h)


def main():
    parser = common.make_parser(__doc__, 'result/validation/loo_cnn', n_train=500)
    parser.add_argument('--n-test', type=int, default=3, help='test points, drawn at random')
    parser.add_argument('--n-remove', type=int, default=100,
                        help='training examples removed per test point (largest |influence|)')
    parser.add_argument('--damping', type=float, default=0.01, help='H + damping I')
    parser.add_argument('--train-steps', type=int, default=5000,
                        help='L-BFGS iterations of the initial training at most')
    parser.add_argument('--gtol', type=float, default=1e-8,
                        help='L-BFGS (training, --retrain lbfgs) stops below this max |gradient|')
    parser.add_argument('--retrain', choices=('lbfgs', 'sgd'), default='lbfgs',
                        help='retraining after each removal, from the trained parameters')
    parser.add_argument('--retrain-steps', type=int, default=50,
                        help='L-BFGS iterations at most, or momentum-SGD steps exactly')
    parser.add_argument('--lr', type=float, default=0.05, help='--retrain sgd: learning rate')
    parser.add_argument('--batchsize', '-b', type=int, default=None,
                        help='--retrain sgd: minibatch size (None: full batch)')
    parser.add_argument('--batch-size', type=int, dest='batchsize', default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)  # the name used before
    args = parser.parse_args()
    if args.dataset != 'fashion-mnist':
        raise SystemExit('the CNN expects 28x28 Fashion-MNIST images')
    results = common.Results(args)

    train, test = common.load_data(args)
    common.set_random_seed(args.seed)  # Chainer's initialisers draw from numpy's global RNG
    with chainer.using_config('dtype', numpy.float64):
        model = SmallCNN(int(train[1].max()) + 1)
    grad_norm = fit_lbfgs(model, LOSS, train, args.weight_decay, gtol=args.gtol,
                          max_iter=args.train_steps)
    picked = common.pick_test_points(len(test[0]), args.n_test, args.seed)
    tests = (test[0][picked], test[1][picked])

    calc = ci.InfluenceFunctions(model, train, LOSS, ci.CGSolver(max_iter=2000, tol=1e-8,
                                                                 progress=not args.no_progress),
                                 weight_decay=args.weight_decay, damping=args.damping,
                                 progress=not args.no_progress)
    scores = {'CG': calc.influence(tests)}
    if args.retrain == 'lbfgs':
        retrain = validation.LBFGSRetrainer(LOSS, args.weight_decay, gtol=args.gtol,
                                            max_iter=args.retrain_steps)
    else:
        retrain = validation.MomentumSGDRetrainer(LOSS, args.weight_decay, args.retrain_steps,
                                                  args.lr, batch_size=args.batchsize,
                                                  seed=args.seed)
    loo = validation.loo_validation(model, LOSS, train, tests, scores, retrain, args.n_remove,
                                    progress=not args.no_progress)

    method = loo['methods']['CG']
    accuracy = float((model(test[0]).array.argmax(axis=1) == test[1]).mean())
    lines = ['N={} parameters={} train max|grad| {:.1e}; test accuracy {:.3f}; CG iterations {}'
             .format(len(train[0]), calc.space.size, grad_norm, accuracy,
                     calc.solver.diagnostics['iterations'].tolist()),
             'damping {:g}, retraining: {} x {} ({})'.format(
                 args.damping, args.retrain, args.retrain_steps, _retrain_note(retrain))]
    for m, index in enumerate(picked):
        lines.append('test point {}: Pearson {:.4f}  Spearman {:.4f}  slope {:.2f}'.format(
            index, method['pearson'][m], method['spearman'][m], method['slope'][m]))
        plots.plot_loo_scatter(method['predicted'][m], loo['actual'][m],
                               results.path('scatter_test{}.png'.format(index)),
                               'CNN, damping {:g}, test point {}'.format(args.damping, index))
    results.data.update(test_indices=picked, fit_grad_norm=grad_norm, test_accuracy=accuracy,
                        n_params=calc.space.size, removed=loo['removed'], actual=loo['actual'],
                        methods=loo['methods'])
    if args.retrain == 'lbfgs':
        results.data['retrain_grad_norms'] = retrain.grad_norms
    results.write()
    common.print_summary('Leave-one-out, small CNN (Koh & Liang Fig. 2 right)', lines, results)


def _retrain_note(retrain):
    if isinstance(retrain, validation.LBFGSRetrainer):
        return 'final max|grad| up to {:.1e}'.format(max(retrain.grad_norms))
    return 'lr {:g}, momentum {:g}'.format(retrain.lr, retrain.momentum)


if __name__ == '__main__':
    main()
