"""Koh & Liang (2017) Fig. 2 left: influence against leave-one-out retraining, logistic regression.

A 10-class logistic regression without bias (weight decay 0.01, float64) is fitted to convergence by
L-BFGS on a Fashion-MNIST subset. For each of --n-test random test points, the --n-remove training
examples of largest |influence| (CG) are removed one at a time and the model is retrained from the
fitted parameters to convergence (L-BFGS); the measured change of the test loss is compared with
the predicted -influence/N of the CG and the LiSSA solvers (Pearson and Spearman per test point).
"""
import argparse
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
    parser = common.make_parser(__doc__, 'result/validation/loo_logreg', n_train=1000)
    parser.add_argument('--n-test', type=int, default=10, help='test points, drawn at random')
    parser.add_argument('--n-remove', type=int, default=100,
                        help='training examples removed per test point (largest |influence|)')
    parser.add_argument('--gtol', type=float, default=1e-9,
                        help='L-BFGS stops when max |gradient| of the objective is below this')
    parser.add_argument('--cg-tol', type=float, default=1e-10, help='CG relative residual')
    parser.add_argument('--lissa-depth', type=int, default=5000, help='LiSSA recursion depth')
    parser.add_argument('--lissa-repeat', type=int, default=1, help='LiSSA recursions averaged')
    parser.add_argument('--lissa-batchsize', type=int, default=100, help='LiSSA minibatch size')
    parser.add_argument('--lissa-batch', type=int, dest='lissa_batchsize',
                        default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # the name used before
    args = parser.parse_args()
    results = common.Results(args)

    train, test = common.load_data(args)
    n_classes = int(train[1].max()) + 1
    model = common.linear_model(train[0].shape[1], n_classes)
    grad_norm = fit_lbfgs(model, LOSS, train, args.weight_decay, gtol=args.gtol, max_iter=10000)
    picked = common.pick_test_points(len(test[0]), args.n_test, args.seed)
    tests = (test[0][picked], test[1][picked])

    solvers = {'CG': ci.CGSolver(max_iter=1000, tol=args.cg_tol, progress=not args.no_progress),
               'LiSSA': ci.LiSSASolver(depth=args.lissa_depth, repeat=args.lissa_repeat,
                                       batch_size=args.lissa_batchsize, seed=args.seed,
                                       progress=not args.no_progress)}
    scores = {name: ci.InfluenceFunctions(
        model, train, LOSS, solver, weight_decay=args.weight_decay,
        progress=not args.no_progress).influence(tests) for name, solver in solvers.items()}
    retrain = validation.LBFGSRetrainer(LOSS, args.weight_decay, gtol=args.gtol, max_iter=10000)
    loo = validation.loo_validation(model, LOSS, train, tests, scores, retrain, args.n_remove,
                                    progress=not args.no_progress)

    lines = ['N={} D={} classes={} fit max|grad|={:.1e}; {} retrainings, max|grad| {:.1e}'.format(
        len(train[0]), train[0].shape[1], n_classes, grad_norm, len(retrain.grad_norms),
        max(retrain.grad_norms))]
    lines.append('{:>6} {:>9}  {}'.format('test', 'loss', '  '.join(
        '{0} Pearson  {0} Spearman'.format(name) for name in scores)))
    base = validation.per_example_losses(model, LOSS, tests)
    for m, index in enumerate(picked):
        row = '  '.join('{:10.4f} {:11.4f}'.format(loo['methods'][name]['pearson'][m],
                                                   loo['methods'][name]['spearman'][m])
                        for name in scores)
        lines.append('{:>6} {:9.4f}  {}'.format(index, base[m], row))
    for name, method in loo['methods'].items():
        lines.append('{}: Pearson min {:.4f} median {:.4f}; slope of actual on predicted '
                     '{:.2f}-{:.2f}'.format(name, method['pearson'].min(),
                                            numpy.median(method['pearson']),
                                            method['slope'].min(), method['slope'].max()))
        for m, index in enumerate(picked):
            plots.plot_loo_scatter(method['predicted'][m], loo['actual'][m],
                                   results.path('scatter_{}_test{}.png'.format(name, index)),
                                   'logistic regression, {}, test {}'.format(name, index))
    results.data.update(
        test_indices=picked, test_losses=base, fit_grad_norm=grad_norm,
        retrain_grad_norm_max=max(retrain.grad_norms), removed=loo['removed'],
        actual=loo['actual'], methods=loo['methods'],
        solver_diagnostics={name: _diagnostics(s) for name, s in solvers.items()})
    results.write()
    common.print_summary('Leave-one-out, logistic regression (Koh & Liang Fig. 2 left)', lines,
                         results)


def _diagnostics(solver):
    keep = ('iterations', 'relative_residual', 'converged', 'scale', 'top_eigenvalue', 'depth')
    return {k: v for k, v in solver.diagnostics.items() if k in keep}


if __name__ == '__main__':
    main()
