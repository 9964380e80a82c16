"""Koh & Liang (2017) Fig. 3: influence through a smooth hinge against leave-one-out retraining of a
linear SVM fitted with the true hinge.

A binary linear SVM without bias (default: Fashion-MNIST T-shirt/top vs Shirt) minimises
(1/N) sum max(0, 1 - y w.x) + weight_decay/2 ||w||^2, solved exactly (dual active-set method).
Influence is computed at that solution with the smooth hinge t log(1 + exp((1 - s)/t)) for each
--temperatures t (exact Hessian). For random test points with a positive hinge loss, the --n-remove
training examples of largest |influence| (smallest t) are removed one at a time, the SVM is refitted
exactly, and the change of the test point's true hinge loss is compared with -influence/N.

Two removal protocols are reported: 'in-margin' draws the removed examples from the training points
with a non-zero hinge gradient (margin < 1; what the paper's choice by t=0 influence gives), 'all'
from the whole training set, margin support vectors included (removing one of those is a non-smooth
event that no smooth approximation at the optimum sees).
"""
import os
import sys

import numpy

sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
import chainer_influence as ci  # NOQA: E402
from chainer_influence import plots, validation  # NOQA: E402
from chainer_influence.losses import hinge_loss, signed_margins, smooth_hinge_loss  # NOQA: E402

import common  # NOQA: E402

MARGIN_TOL = 1e-6  # training margins below 1 - MARGIN_TOL count as inside the margin


def main():
    parser = common.make_parser(__doc__, 'result/validation/loo_svm', n_train=1000,
                                classes=[0, 6])
    parser.add_argument('--temperatures', type=lambda s: [float(v) for v in s.split(',')],
                        default=[0.001, 0.1],
                        help='comma-separated smoothing temperatures t > 0; the first one picks '
                        'the removed examples')
    parser.add_argument('--n-test', type=int, default=5,
                        help='test points, drawn at random among those with positive hinge loss')
    parser.add_argument('--n-remove', type=int, default=100,
                        help='training examples removed per test point (largest |influence|)')
    args = parser.parse_args()
    results = common.Results(args)

    train, test = common.load_data(args)
    if train[1].max() != 1:
        raise SystemExit('the SVM needs exactly two classes (--classes a,b)')
    model = common.linear_model(train[0].shape[1], 1)
    retrain = validation.HingeSVMRetrainer(args.weight_decay)
    retrain(model, train, numpy.ones(len(train[0])))
    margins = {name: signed_margins(model, *data).array for name, data in
               (('train', train), ('test', test))}
    picked = common.pick_test_points(len(test[0]), args.n_test, args.seed,
                                     among=numpy.flatnonzero(margins['test'] < 1))
    tests = (test[0][picked], test[1][picked])

    scores = {'t={:g}'.format(t): ci.InfluenceFunctions(
        model, train, smooth_hinge_loss(t), ci.ExactSolver(), weight_decay=args.weight_decay,
        progress=not args.no_progress).influence(tests) for t in args.temperatures}
    in_margin = margins['train'] < 1 - MARGIN_TOL
    on_margin = numpy.abs(margins['train'] - 1) <= MARGIN_TOL
    lines = ['N={} D={}; support vectors: {} inside the margin, {} on it; test points {} '
             '(margins {})'.format(len(train[0]), train[0].shape[1], int(in_margin.sum()),
                                   int(on_margin.sum()), list(picked),
                                   numpy.round(margins['test'][picked], 3).tolist())]
    results.data.update(test_indices=picked, test_margins=margins['test'][picked],
                        n_inside_margin=int(in_margin.sum()), n_on_margin=int(on_margin.sum()))
    for protocol, candidates in (('in-margin', in_margin), ('all', None)):
        loo = validation.loo_validation(model, hinge_loss, train, tests, scores, retrain,
                                        args.n_remove, candidates, progress=not args.no_progress)
        removed_on_margin = on_margin[loo['removed']].sum(axis=1)
        lines.append('removal from {}: on-margin support vectors removed per test point {}'.format(
            protocol, removed_on_margin.tolist()))
        for name, method in loo['methods'].items():
            lines.append('  {:>8} Pearson {}  Spearman {}  slope {}'.format(
                name, _fmt(method['pearson']), _fmt(method['spearman']), _fmt(method['slope'])))
            plots.plot_loo_scatter(
                method['predicted'][0], loo['actual'][0],
                results.path('scatter_{}_{}_test{}.png'.format(protocol, name, picked[0])),
                'SVM, smooth hinge {}, removal: {}'.format(name, protocol))
        results.data[protocol] = dict(loo, removed_on_margin=removed_on_margin)
    lines.append('max KKT violation of the {} exact SVM fits: {:.1e}'.format(
        len(retrain.kkt), max(retrain.kkt)))
    results.data['kkt_max'] = max(retrain.kkt)
    results.write()
    common.print_summary('Leave-one-out, linear SVM with smooth hinge (Koh & Liang Fig. 3)',
                         lines, results)


def _fmt(values):
    return ' '.join('{:.3f}'.format(v) for v in values)


if __name__ == '__main__':
    main()
