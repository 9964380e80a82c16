"""Koh & Liang (2017) Sec. 5.4: finding mislabelled training examples by self-influence.

--flip (default 10 %) of the training labels are changed to another class at random (--seed), a
logistic regression without bias (weight decay 0.01, float64) is fitted to convergence on the noisy
labels, and the training examples are checked in decreasing order of self-influence
grad L(z_i)^T H^-1 grad L(z_i), of training loss, and in random order. Reports the fraction of
flipped labels found after checking 5, 10, 20 and 30 % of the data, the ROC AUC of each ranking,
and the full curves.
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
    args = parser.parse_args()
    results = common.Results(args)

    (x, t), _ = common.load_data(args)
    n_classes = int(t.max()) + 1
    noisy, flipped = validation.flip_labels(t, args.flip, n_classes, seed=args.seed)
    train = (x, noisy)
    model = common.linear_model(x.shape[1], n_classes)
    grad_norm = fit_lbfgs(model, LOSS, train, args.weight_decay, max_iter=10000)
    calc = ci.InfluenceFunctions(model, train, LOSS, ci.ExactSolver(),
                                 weight_decay=args.weight_decay, progress=not args.no_progress)
    found = validation.mislabel_detection(calc, flipped, seed=args.seed + 1)

    lines = ['N={} D={} classes={}; {} labels flipped; fit max|grad| {:.1e}'.format(
        len(x), x.shape[1], n_classes, len(flipped), grad_norm)]
    lines.append('{:>15} {:>7}  found after checking {}'.format(
        'ranking', 'ROC AUC', ' '.join('{:>5.0%}'.format(c) for c in validation.CHECKPOINTS)))
    for name, summary in found.items():
        lines.append('{:>15} {:7.4f}  {:>20}'.format(name, summary['auc'], ' '.join(
            '{:5.1%}'.format(summary['found_at'][c]) for c in validation.CHECKPOINTS)))
    plots.plot_detection_curves({name: (s['checked'], s['found']) for name, s in found.items()},
                                results.path('detection_curves.png'))
    plots.plot_self_influence(found['self-influence']['scores'], results.path(
        'self_influence.png'), flipped=flipped)
    results.data.update(flipped=flipped, fit_grad_norm=grad_norm, methods=found)
    results.write()
    common.print_summary('Mislabel detection (Koh & Liang Sec. 5.4)', lines, results)


if __name__ == '__main__':
    main()
