"""Koh & Liang (2017) Sec. 5.4: finding mislabelled training examples by self-influence.

--flip (default 10 %) of the training labels are changed to another class at random (--seed) and
a model is trained on the noisy labels:

* --arch logreg (default): a logistic regression without bias (float64) fitted to convergence by
  L-BFGS; self-influence with the exact Hessian;
* --arch cnn: a float32 CNN (conv 5x5/2 -> 16, tanh, conv 3x3/2 -> 32, tanh, linear; 28x28
  images) trained for --epoch epochs of momentum SGD; self-influence with EK-FAC on the
  Gauss-Newton (--fisher statistics, --damping; None: the library's default damping), in one pass.

The training examples are checked in decreasing order of self-influence
grad L(z_i)^T (H + damping I)^-1 grad L(z_i), of training loss, and in random order. Reports the
fraction of flipped labels found after checking 5, 10, 20 and 30 % of the data, the ROC AUC of each
ranking, and the full curves.
"""
import os
import sys

import numpy

sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
import chainer_influence as ci  # NOQA: E402
from chainer_influence import plots, validation  # NOQA: E402
from chainer_influence.retraining import fit_lbfgs  # NOQA: E402

import common  # NOQA: E402

LOSS = ci.softmax_cross_entropy_loss


def main():
    parser = common.make_parser(__doc__, 'result/validation/mislabel', n_train=1000)
    parser.add_argument('--flip', type=float, default=0.1,
                        help='fraction of training labels flipped to another class')
    parser.add_argument('--arch', choices=('logreg', 'cnn'), default='logreg',
                        help='the model trained on the noisy labels')
    cnn = parser.add_argument_group('--arch cnn')
    cnn.add_argument('--epoch', '-e', type=int, default=5, help='momentum-SGD epochs')
    cnn.add_argument('--batchsize', '-b', type=int, default=128, help='minibatch size')
    cnn.add_argument('--lr', type=float, default=0.05, help='learning rate (momentum 0.9)')
    cnn.add_argument('--fisher', choices=('sampled', 'exact'), default='sampled',
                     help='EK-FAC output-gradient statistics')
    cnn.add_argument('--damping', type=float, default=None,
                     help='EK-FAC damping; None: the library\'s default rule')
    args = parser.parse_args()
    if args.arch == 'cnn' and args.dataset != 'fashion-mnist':
        raise SystemExit('the CNN expects 28x28 Fashion-MNIST images')
    results = common.Results(args)

    (x, t), test = common.load_data(args)
    n_classes = int(t.max()) + 1
    noisy, flipped = validation.flip_labels(t, args.flip, n_classes, seed=args.seed)
    if args.arch == 'logreg':
        train = (x, noisy)
        model, fit_note = _fit_logreg(train, n_classes, args)
        calc = ci.InfluenceFunctions(model, train, LOSS, ci.ExactSolver(),
                                     weight_decay=args.weight_decay, progress=not args.no_progress)
    else:
        train = (x.astype(numpy.float32), noisy)
        model, fit_note = _train_cnn(train, n_classes, args)
        calc = ci.InfluenceFunctions(model, train, LOSS,
                                     ci.EKFACSolver(fisher=args.fisher, seed=args.seed,
                                                    progress=not args.no_progress),
                                     curvature='gauss-newton', weight_decay=args.weight_decay,
                                     damping=args.damping, progress=not args.no_progress)
    found = validation.mislabel_detection(calc, flipped, seed=args.seed + 1)
    predicted = model(test[0].astype(train[0].dtype)).array.argmax(axis=1)
    accuracy = float((predicted == test[1]).mean())

    choice = calc.solver_choice
    lines = ['N={} D={} classes={}; {} labels flipped; {}; test accuracy {:.3f}'.format(
        len(x), x.shape[1], n_classes, len(flipped), fit_note, accuracy),
        'self-influence: {} on the {}, damping {:.4g} ({})'.format(
            choice['solver'], choice['curvature'], choice['damping'], choice['damping_rule'])]
    lines.append('{:>15} {:>7}  found after checking {}'.format(
        'ranking', 'ROC AUC', ' '.join('{:>5.0%}'.format(c) for c in validation.CHECKPOINTS)))
    for name, summary in found.items():
        lines.append('{:>15} {:7.4f}  {:>20}'.format(name, summary['auc'], ' '.join(
            '{:5.1%}'.format(summary['found_at'][c]) for c in validation.CHECKPOINTS)))
    plots.plot_detection_curves({name: (s['checked'], s['found']) for name, s in found.items()},
                                results.path('detection_curves.png'))
    plots.plot_self_influence(found['self-influence']['scores'], results.path(
        'self_influence.png'), flipped=flipped)
    results.data.update(flipped=flipped, fit=fit_note, test_accuracy=accuracy, methods=found,
                        solver_choice=choice)
    results.write()
    common.print_summary('Mislabel detection (Koh & Liang Sec. 5.4), {}'.format(args.arch),
                         lines, results)


def _fit_logreg(train, n_classes, args):
    model = common.linear_model(train[0].shape[1], n_classes)
    grad_norm = fit_lbfgs(model, LOSS, train, args.weight_decay, max_iter=10000)
    return model, 'fit max|grad| {:.1e}'.format(grad_norm)


def _train_cnn(train, n_classes, args):
    common.set_random_seed(args.seed)  # Chainer's initialisers draw from numpy's global RNG
    model = common.SmallCNN(n_classes, channels=(16, 32))
    steps = args.epoch * len(train[0]) // args.batchsize
    validation.MomentumSGDRetrainer(LOSS, args.weight_decay, steps, args.lr,
                                    batch_size=args.batchsize, seed=args.seed)(
        model, train, numpy.ones(len(train[0])))
    return model, '{} momentum-SGD steps (lr {:g}, batch {})'.format(steps, args.lr,
                                                                      args.batchsize)


if __name__ == '__main__':
    main()
