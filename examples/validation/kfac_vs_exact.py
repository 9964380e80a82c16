"""K-FAC and EK-FAC influence against the exact Gauss-Newton influence on a digits MLP.

A float64 MLP (64 -> --hidden, tanh, -> 10) is fitted by full-batch L-BFGS with weight decay
(default 1e-3) on --n-train of scikit-learn's digits. For --n-test random test points the influence
on every training example is computed with the exact (dense) Gauss-Newton G: -g_test^T
(G + damping I)^-1 g_i, the reference, and with the same damping and weight decay by

* K-FAC and EK-FAC, each with 'exact' and 'sampled' output-gradient statistics (seed --seed);
* the block-diagonal exact G (blocks between different layers set to 0), the best any
  layer-wise method such as K-FAC can do.

Reports Pearson (and Spearman) per test point between each method's influence and the reference,
over all training examples. The issue's numpy prototype (64-32-10, 1,000 digits, damping 0.01,
weight decay 1e-3) gave a mean Pearson of 0.80 (exact statistics), 0.78 (one sampled label per
example) and 0.96 (block-diagonal).
"""
import os
import sys
import time

import numpy

import chainer

sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
import chainer_influence as ci  # NOQA: E402
from chainer_influence import validation  # NOQA: E402
from chainer_influence.retraining import fit_lbfgs  # NOQA: E402

import common  # NOQA: E402

LOSS = ci.softmax_cross_entropy_loss


class BlockDiagonalExactSolver(object):
    """(G_bd + damping I)^-1 V with G_bd the dense curvature whose blocks between different
    layers (links: parameter names up to the last '/') are zero; for small P."""

    def __init__(self):
        self.diagnostics = {}

    def solve(self, curvature, V, damping=0.0):
        V = curvature.as_rows(V)
        G = curvature.dense_matrix()
        space = curvature.space
        layers = [name.rsplit('/', 1)[0] for name in space.names]
        layer_of = numpy.repeat(layers, space.sizes)
        G = numpy.where(layer_of[:, None] == layer_of[None, :], G, 0.0)
        self.diagnostics = {'solver': 'block-diagonal exact', 'damping': float(damping)}
        return numpy.linalg.solve(G + damping * numpy.eye(len(G)), V.T).T


def main():
    parser = common.make_parser(__doc__, 'result/validation/kfac_vs_exact', n_train=1000,
                                dataset='digits')
    parser.set_defaults(weight_decay=1e-3)
    parser.add_argument('--hidden', type=int, default=32, help='hidden units')
    parser.add_argument('--n-test', type=int, default=20, help='test points, drawn at random')
    parser.add_argument('--damping', type=float, default=0.01, help='curvature + damping I')
    parser.add_argument('--gtol', type=float, default=1e-6,
                        help='L-BFGS stops below this max |gradient|')
    args = parser.parse_args()
    if args.dataset != 'digits':
        raise SystemExit('this comparison runs on --dataset digits')
    results = common.Results(args)

    train, test = common.load_data(args)
    common.set_random_seed(args.seed)  # Chainer's initialisers draw from numpy's global RNG
    with chainer.using_config('dtype', numpy.float64):
        model = common.MLP(train[0].shape[1], args.hidden, int(train[1].max()) + 1)
    grad_norm = fit_lbfgs(model, LOSS, train, args.weight_decay, gtol=args.gtol, max_iter=10000)
    picked = common.pick_test_points(len(test[0]), args.n_test, args.seed)
    tests = (test[0][picked], test[1][picked])

    solvers = {'exact GN (reference)': ci.ExactSolver(),
               'block-diagonal GN': BlockDiagonalExactSolver()}
    for name, make in (('K-FAC', ci.KFACSolver), ('EK-FAC', ci.EKFACSolver)):
        for fisher in ('exact', 'sampled'):
            solvers['{} {}'.format(name, fisher)] = make(fisher=fisher, seed=args.seed)
    scores, seconds = {}, {}
    for name, solver in solvers.items():
        start = time.time()
        scores[name] = ci.InfluenceFunctions(
            model, train, LOSS, solver, curvature='gauss-newton', weight_decay=args.weight_decay,
            damping=args.damping, progress=not args.no_progress).influence(tests)
        seconds[name] = round(time.time() - start, 2)

    reference = scores['exact GN (reference)']
    methods = {name: {'pearson': numpy.array([validation.pearson(a, b)
                                              for a, b in zip(s, reference)]),
                      'spearman': numpy.array([validation.spearman(a, b)
                                               for a, b in zip(s, reference)]),
                      'seconds': seconds[name]}
               for name, s in scores.items() if s is not reference}
    accuracy = float((model(test[0]).array.argmax(axis=1) == test[1]).mean())
    lines = ['N={} parameters={} fit max|grad| {:.1e}; test accuracy {:.3f}; damping {:g}, '
             'weight decay {:g}; {} test points'.format(
                 len(train[0]), ci.ParameterSpace(model).size, grad_norm, accuracy, args.damping,
                 args.weight_decay, len(picked)),
             '{:>20} {:>8} {:>8} {:>8} {:>8}  (against the exact GN influence)'.format(
                 'method', 'Pearson', 'min', 'Spearman', 'seconds')]
    for name, method in methods.items():
        lines.append('{:>20} {:8.4f} {:8.4f} {:8.4f} {:8.2f}'.format(
            name, method['pearson'].mean(), method['pearson'].min(), method['spearman'].mean(),
            method['seconds']))
    results.data.update(test_indices=picked, fit_grad_norm=grad_norm, test_accuracy=accuracy,
                        methods=methods, reference_seconds=seconds['exact GN (reference)'])
    results.write()
    common.print_summary('K-FAC and EK-FAC against the exact Gauss-Newton influence', lines,
                         results)


if __name__ == '__main__':
    main()
