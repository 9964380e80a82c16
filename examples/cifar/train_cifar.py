#!/usr/bin/env python
"""Train a small ResNet or VGG on CIFAR-10 with Chainer's Trainer and rank training images by
influence, from the last layer only, from all parameters, or both side by side.

After training, ``InfluenceExtension`` writes, under ``<out>/influence_last/`` and/or
``<out>/influence_all/``: ``rankings.json``, ``rankings.csv``, ``influence.npz`` and
``top_influential.png`` (each test image beside its most helpful and most harmful training
images), plus ``self_influence.png`` where self-influence is computed; ``<out>/log`` holds the
training log with the ``influence_last/...`` and ``influence_all/...`` entries. With
``--influence-params both``, ``<out>/influence_comparison.json`` compares the two rankings.

Influence scopes:

* last: ``/fc/W`` and ``/fc/b`` only, P = 10 * (features + 1) (650 for the ResNet, 1,290 for
  the VGG): the loss is convex there, the exact solver (dense Hessian) is affordable, damping
  ``--damping-last``; also self-influence. A few passes over the training set: minutes on a
  CPU for a few thousand images.
* all: every parameter (78,000 for the ResNet, 205,000 for the VGG): EK-FAC on the Gauss-Newton
  by default (``--solver``): positive semi-definite, so no damping has to be given
  (``--damping-all`` None: 0.1 x the mean eigenvalue of the approximation, as Kronfluence), two
  passes over the training set to fit the factors, then solves without Hessian-vector products
  for any number of test images, and self-influence in one more pass. ``--solver cg`` or
  ``lissa`` run Hessian- or Gauss-Newton-vector products (``--curvature``): one pass over the
  training set per iteration and test image; on the (indefinite) Hessian they need a damping
  that makes H + damping I positive definite, and stop with a message that says so otherwise.

No data augmentation: influence functions explain the training set the model actually saw.

    # CPU, minutes: last-layer influence of a ResNet-8 trained on 2,000 images
    python examples/cifar/train_cifar.py --train-size 2000 --test-size 1000 --epoch 10
    # GPU: last-layer and all-parameter influence side by side
    python examples/cifar/train_cifar.py --train-size 5000 --epoch 20 \\
        --influence-params both --device @cupy:0
"""
import os
import sys

import chainer.links as L

sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
import chainer_influence as ci  # NOQA: E402
from examples import common  # NOQA: E402

import compare_influence  # NOQA: E402
from cifar_models import ARCHS, LAST_LAYER  # NOQA: E402

SCOPES = ('last', 'all')


def parse_args(argv=None):
    parser = common.make_parser(__doc__, out='result/cifar')
    common.add_data_arguments(
        parser, 'folder with the CIFAR-10 python batches (data_batch_1..5, test_batch, from '
        'cifar-10-python.tar.gz); None: Chainer\'s downloader (internet on first use, cached in '
        '$CHAINER_DATASET_ROOT)', n_train=50000, n_test=10000)

    model = common.add_training_arguments(parser, epoch=10, batchsize=128, lr=0.05,
                                          weight_decay=5e-4)
    model.add_argument('--arch', choices=sorted(ARCHS), default='resnet',
                       help='resnet: ResNet with BatchNormalization, residual blocks, global '
                            'average pooling; vgg: VGG-style CNN without BatchNormalization, '
                            'two Linear layers')
    model.add_argument('--width', type=int, default=16,
                       help='channels of the first stage (doubled in each of the next two)')
    model.add_argument('--blocks', type=int, default=1,
                       help='resnet: residual blocks per stage (1: ResNet-8, 3: ResNet-20)')

    influence = common.add_influence_arguments(parser, influence_batchsize=256)
    influence.add_argument('--influence-params', choices=SCOPES + ('both',), default='last',
                           help='last: /fc/W and /fc/b with the exact solver; all: every '
                                'parameter with --solver; both: run both and write '
                                'influence_comparison.json (the top-k sets compared are '
                                '--top-k long)')
    influence.add_argument('--damping-last', type=float, default=0.01,
                           help='damping of the last-layer solve (H + damping I); with weight '
                                'decay H is positive definite, damping keeps the float32 '
                                'eigendecomposition well conditioned')
    influence.add_argument('--damping-all', type=float, default=None,
                           help='damping of the all-parameter solve; None: the solver\'s '
                                'default rule (EK-FAC/K-FAC: 0.1 x the mean eigenvalue of the '
                                'approximation), recorded in rankings.json')
    influence.add_argument('--solver', choices=('ekfac', 'kfac', 'cg', 'lissa'), default='ekfac',
                           help='all-parameter solver: ekfac/kfac (Kronecker factors on the '
                                'Gauss-Newton, fitted once), cg (full-training-set curvature-'
                                'vector products, deterministic) or lissa (minibatch recursion)')
    influence.add_argument('--curvature', choices=('gauss-newton', 'hessian'),
                           default='gauss-newton',
                           help='all-parameter curvature of cg and lissa (ekfac and kfac always '
                                'use the Gauss-Newton)')
    influence.add_argument('--fisher', choices=('sampled', 'exact'), default='sampled',
                           help='ekfac/kfac: output-gradient statistics from one label per image '
                                'drawn from the model (seeded by --seed) or the exact expectation '
                                '(10 times the cost)')
    influence.add_argument('--cg-iterations', type=int, default=50,
                           help='CG: most iterations (each is one pass over the training set)')
    influence.add_argument('--cg-tol', type=float, default=1e-3,
                           help='CG: relative residual at which a test point\'s solve stops')
    influence.add_argument('--lissa-depth', type=int, default=1000,
                           help='LiSSA: recursion steps (one minibatch HVP each)')
    influence.add_argument('--lissa-batchsize', type=int, default=64,
                           help='LiSSA: training examples per minibatch Hessian')
    return parser.parse_args(argv)


def load(args):
    """``(train, test)`` cut to --train-size/--test-size; exits with a message without data."""
    try:
        train, test = ci.load_cifar10(args.data_dir)
    except ci.DataNotFoundError as e:
        sys.exit('error: {}'.format(e))
    return common.first(train, args.train_size), common.first(test, args.test_size)


def make_model(args):
    """The ``--arch`` network inside an ``L.Classifier``."""
    if args.arch == 'resnet':
        return L.Classifier(ARCHS['resnet'](width=args.width, n_blocks=args.blocks))
    return L.Classifier(ARCHS['vgg'](width=args.width))


def make_solver(args):
    """The all-parameter solver of ``--solver``."""
    progress = not args.no_progress
    if args.solver in ('ekfac', 'kfac'):
        kind = ci.EKFACSolver if args.solver == 'ekfac' else ci.KFACSolver
        return kind(fisher=args.fisher, seed=args.seed, progress=progress)
    if args.solver == 'cg':
        return ci.CGSolver(max_iter=args.cg_iterations, tol=args.cg_tol, progress=progress)
    return ci.LiSSASolver(depth=args.lissa_depth, batch_size=args.lissa_batchsize,
                          progress=progress)


def make_influence_extension(scope, train, test, args):
    """The extension for scope 'last' (exact solver) or 'all' (``--solver``), writing into
    ``<out>/influence_<scope>/``. Self-influence where it costs one pass: always for 'last',
    for 'all' with EK-FAC or K-FAC (CG and LiSSA would need one solve per training image)."""
    if scope == 'last':
        solver, params, damping, curvature = (ci.ExactSolver(), LAST_LAYER, args.damping_last,
                                              'hessian')
    else:
        solver, params, damping, curvature = make_solver(args), None, args.damping_all, (
            args.curvature)
    return ci.InfluenceExtension(
        train, test, test_indices=args.test_indices, top_k=args.top_k, solver=solver,
        params=params, damping=damping, curvature=curvature, out='influence_' + scope,
        self_influence=(not args.no_self_influence and
                        (scope == 'last' or isinstance(solver, ci.KFACSolver))),
        class_names=list(ci.CLASS_NAMES['cifar10']), batch_size=args.influence_batchsize,
        cache=False,  # a new training run never matches the cache's parameter fingerprint
        progress=not args.no_progress)


def compare(influence, args):
    """Write ``<out>/influence_comparison.json`` for the two scopes and print its summary."""
    comparison = compare_influence.compare_reports(
        {scope: ext.report for scope, ext in influence.items()}, args.top_k)
    path = compare_influence.write_comparison(
        comparison, os.path.join(args.out, 'influence_comparison.json'))
    print(compare_influence.summary(comparison))
    print('comparison: {}'.format(path))
    return comparison


def main(argv=None):
    args = parse_args(argv)
    device = common.setup(args)
    train, test = load(args)
    model = make_model(args)
    model.to_device(device)

    trainer = common.make_trainer(model, train, test, args, device, eval_batchsize=500)
    scopes = SCOPES if args.influence_params == 'both' else (args.influence_params,)
    influence = {scope: make_influence_extension(scope, train, test, args) for scope in scopes}
    for scope, extension in influence.items():
        trainer.extend(extension, name='influence_' + scope)
    common.add_print_report(trainer, [
        'epoch', 'main/loss', 'main/accuracy', 'validation/main/loss',
        'validation/main/accuracy'] + ['influence_{}/time'.format(s) for s in scopes] +
        ['elapsed_time'], args)
    try:
        trainer.run(show_loop_exception_msg=False)
    except (ci.NotPositiveDefiniteError, ci.LiSSADivergenceError) as e:
        sys.exit('error: {}'.format(e))
    for scope in scopes:
        print('influence ({}): {}'.format(scope, os.path.join(args.out, 'influence_' + scope)))
    if len(influence) == 2:
        compare(influence, args)


if __name__ == '__main__':
    main()
