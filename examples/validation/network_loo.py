"""Leave-one-out retraining of a small non-convex network, shared by loo_mlp.py and loo_cnn.py.

Not a script. The network (float64) is trained with weight decay by full-batch L-BFGS until
max |gradient| < --gtol; influence is computed by every method of --methods with the same damping;
for each test point the --n-remove training examples of largest |influence| under the FIRST
method are removed one at a time and the network is retrained from the trained parameters for a
fixed budget of steps (--retrain lbfgs: at most --retrain-steps L-BFGS iterations; --retrain sgd:
exactly --retrain-steps momentum-SGD steps, the paper's way). Every method's -influence/N is then
compared with the measured change of the test loss on the same removals.
"""
import argparse

import numpy

import chainer

import chainer_influence as ci
from chainer_influence import plots, validation
from chainer_influence.retraining import fit_lbfgs

import common

LOSS = ci.softmax_cross_entropy_loss


def add_options(parser, n_test, methods):
    """The options of a network leave-one-out script, :func:`common.add_method_options`'s too."""
    parser.add_argument('--n-test', type=int, default=n_test, help='test points, drawn at random')
    parser.add_argument('--n-remove', type=int, default=100,
                        help='training examples removed per test point (largest |influence| '
                        'under the first method)')
    common.add_method_options(parser, methods)
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


def run(args, make_model, title):
    """Train ``make_model(n_classes)`` in float64, score, retrain, print and write the results."""
    results = common.Results(args)
    train, test = common.load_data(args)
    common.set_random_seed(args.seed)  # Chainer's initialisers draw from numpy's global RNG
    with chainer.using_config('dtype', numpy.float64):
        model = make_model(int(train[1].max()) + 1)
    grad_norm = fit_lbfgs(model, LOSS, train, args.weight_decay, gtol=args.gtol,
                          max_iter=args.train_steps)
    picked = common.pick_test_points(len(test[0]), args.n_test, args.seed)
    tests = (test[0][picked], test[1][picked])

    scores, seconds = common.influence_scores(model, train, tests, args)
    retrain = _retrainer(args)
    loo = validation.loo_validation(model, LOSS, train, tests, scores, retrain, args.n_remove,
                                    progress=not args.no_progress)

    n_params = ci.ParameterSpace(model).size
    accuracy = float((model(test[0]).array.argmax(axis=1) == test[1]).mean())
    lines = ['N={} parameters={} train max|grad| {:.1e}; test accuracy {:.3f}'.format(
                 len(train[0]), n_params, grad_norm, accuracy),
             'damping {:g}, weight decay {:g}, fisher {}, retraining: {} x {} ({})'.format(
                 args.damping, args.weight_decay, args.fisher, args.retrain, args.retrain_steps,
                 _retrain_note(retrain)),
             '{:>10} {:>8} {:>8}  Pearson per test point {}'.format(
                 'method', 'mean', 'min', ' '.join(str(i) for i in picked))]
    for name, method in loo['methods'].items():
        lines.append('{:>10} {:8.4f} {:8.4f}  {}   ({} s)'.format(
            name, method['pearson'].mean(), method['pearson'].min(),
            ' '.join('{:.3f}'.format(r) for r in method['pearson']), seconds[name]))
        for m, index in enumerate(picked):
            plots.plot_loo_scatter(method['predicted'][m], loo['actual'][m], results.path(
                'scatter_{}_test{}.png'.format(name, index)), '{}, {}, damping {:g}, test point {}'
                .format(title, name, args.damping, index))
    results.data.update(test_indices=picked, fit_grad_norm=grad_norm, test_accuracy=accuracy,
                        n_params=n_params, removed=loo['removed'], actual=loo['actual'],
                        methods=loo['methods'], influence_seconds=seconds)
    if args.retrain == 'lbfgs':
        results.data['retrain_grad_norms'] = retrain.grad_norms
    results.write()
    common.print_summary('Leave-one-out, ' + title, lines, results)


def _retrainer(args):
    if args.retrain == 'lbfgs':
        return validation.LBFGSRetrainer(LOSS, args.weight_decay, gtol=args.gtol,
                                         max_iter=args.retrain_steps)
    return validation.MomentumSGDRetrainer(LOSS, args.weight_decay, args.retrain_steps, args.lr,
                                           batch_size=args.batchsize, seed=args.seed)


def _retrain_note(retrain):
    if isinstance(retrain, validation.LBFGSRetrainer):
        return 'final max|grad| up to {:.1e}'.format(max(retrain.grad_norms))
    return 'lr {:g}, momentum {:g}'.format(retrain.lr, retrain.momentum)
