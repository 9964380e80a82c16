#!/usr/bin/env python
"""Training-set attack on a binary Fashion-MNIST task (Koh & Liang 2017, Section 5.2).

Pullover vs coat (the default --classes 2,4): two long-sleeved garments, one of the most confused
pairs of Fashion-MNIST. The model is a feature extractor (an MLP 784-256-h, ReLU) trained once
(MomentumSGD --lr, WeightDecay --weight-decay, --epoch) on --pretrain-size images of the two
classes that are NOT in the attacked training set, then frozen, under a linear softmax top
retrained exactly by L-BFGS (convex: L2 term --weight-decay/2 |theta|^2, as Koh & Liang's 0.001) -
the analogue of the paper's frozen Inception features + logistic regression. --features pixels
puts the top on the raw pixels instead.

For each of --n-targets correctly classified test images (the targets), the training images are
ranked by the first-order gain of an L-infinity step, |I_pert,loss|_1 (pixel space, through the
frozen extractor); the top K (for K in --n-perturb, tried in increasing order until one succeeds)
are changed by iterated signed steps epsilon-bounded around the originals, retraining the top
after every step. Success: the target's predicted label flips after retraining.

Writes under --out: results.json (settings, per-target attacks, summary), attacked.npz (per
target its final changed training indices and images) and attack.png (targets, original and
attacked training images, differences).

    python examples/attack/attack_fashion_mnist.py
"""
import os
import sys
import time

import numpy

import chainer
import chainer.functions as F
import chainer.links as L

sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
sys.path.insert(1, os.path.dirname(os.path.abspath(__file__)))
import chainer_influence as ci  # NOQA: E402
from chainer_influence import plots  # NOQA: E402
from chainer_influence.batches import get_batch  # NOQA: E402
from chainer_influence.retraining import fit_lbfgs  # NOQA: E402
from examples import common  # NOQA: E402
import training_set_attack  # NOQA: E402


class MLPFeatures(chainer.Chain):
    """Feature extractor 784-n_hidden-n_features with ReLU; frozen after pretraining."""

    def __init__(self, n_hidden=256, n_features=128):
        super().__init__()
        with self.init_scope():
            self.l1 = L.Linear(None, n_hidden)
            self.l2 = L.Linear(n_hidden, n_features)

    def forward(self, x):
        return F.relu(self.l2(F.relu(self.l1(x))))


class Pretraining(chainer.Chain):
    """Extractor + a throw-away linear head, for pretraining only."""

    def __init__(self, extractor, n_features, n_out=2):
        super().__init__()
        with self.init_scope():
            self.extractor = extractor
            self.head = L.Linear(n_features, n_out)

    def forward(self, x):
        return self.head(self.extractor(x))


def parse_args(argv=None):
    parser = common.make_parser(__doc__, out='result/attack')
    common.add_training_arguments(parser, epoch=5, batchsize=100, lr=0.05, weight_decay=0.001)
    parser.add_argument('--data-dir', default=None,
                        help='folder of the Fashion-MNIST IDX files; None: '
                        '/usr/share/datasets/fashion-mnist')
    parser.add_argument('--classes', default='2,4',
                        help='the two Fashion-MNIST classes, relabelled 0 and 1 (2,4: pullover '
                        'vs coat; 6,0: shirt vs T-shirt)')
    parser.add_argument('--train-size', type=int, default=2000,
                        help='training images of the two classes that the top is fitted on and '
                        'the attack perturbs')
    parser.add_argument('--pretrain-size', type=int, default=4000,
                        help='other training images of the two classes, only for pretraining '
                        'the extractor')
    parser.add_argument('--features', choices=('mlp', 'pixels'), default='mlp',
                        help='mlp: frozen pretrained MLP features; pixels: top on raw pixels')
    parser.add_argument('--n-features', type=int, default=128,
                        help='features of the MLP extractor (the top has 2 (h + 1) parameters)')
    parser.add_argument('--epsilon', type=float, default=8. / 255,
                        help='L-infinity bound of each perturbation, pixel units of [0, 1]')
    parser.add_argument('--step-size', type=float, default=None,
                        help='signed-gradient step (pixel units); None: epsilon / 4')
    parser.add_argument('--steps', type=int, default=5,
                        help='attack steps (each followed by exact retraining) per attempt')
    parser.add_argument('--n-targets', type=int, default=20, help='target test images')
    parser.add_argument('--targets', choices=('random', 'smallest-margin'), default='random',
                        help='random: drawn (--seed) among the correctly classified test images; '
                        'smallest-margin: the correctly classified ones closest to the boundary')
    parser.add_argument('--n-perturb', default='1,2,5,10',
                        help='numbers K of training images changed, tried in increasing order '
                        'per target until one flips it')
    parser.add_argument('--n-show', type=int, default=6, help='rows of the figure')
    args = parser.parse_args(argv)
    args.classes = [int(c) for c in args.classes.split(',')]
    args.n_perturb = sorted(int(k) for k in args.n_perturb.split(','))
    if len(args.classes) != 2:
        parser.error('--classes takes exactly two class ids')
    if args.step_size is None:
        args.step_size = args.epsilon / 4
    return args


def load_task(args):
    """(x, t) attacked training set, (x, t) pretraining set, (x, t) test set: float64 pixels
    (N, 784) in [0, 1], int32 labels 0/1; the two training parts are disjoint."""
    train, test = ci.load_fashion_mnist(args.data_dir)
    x, t = _two_classes(train, args.classes)
    order = numpy.random.RandomState(args.seed).permutation(len(x))
    if args.train_size + args.pretrain_size > len(x):
        raise SystemExit('--train-size + --pretrain-size exceed the {} training images of classes '
                         '{}'.format(len(x), args.classes))
    attacked = numpy.sort(order[:args.train_size])
    pretrain = order[args.train_size:args.train_size + args.pretrain_size]
    return (x[attacked], t[attacked]), (x[pretrain], t[pretrain]), _two_classes(test, args.classes)


def _two_classes(dataset, classes):
    x, t = get_batch(dataset, numpy.arange(len(dataset)))
    keep = numpy.isin(t, classes)
    return (x[keep].reshape(int(keep.sum()), -1).astype(numpy.float64),
            (t[keep] == classes[1]).astype(numpy.int32))


def pretrain_extractor(args, data, device):
    """The MLP extractor trained (MomentumSGD, WeightDecay, common.make_trainer) on ``data``
    with a throw-away linear head, then frozen."""
    with chainer.using_config('dtype', numpy.float64):
        extractor = MLPFeatures(n_features=args.n_features)
        model = L.Classifier(Pretraining(extractor, args.n_features))
    model.to_device(device)
    trainer = common.make_trainer(model, chainer.datasets.TupleDataset(*data), None, args,
                                  device)
    common.add_print_report(trainer, ['epoch', 'main/loss', 'main/accuracy', 'elapsed_time'],
                            args)
    trainer.run()
    extractor.disable_update()
    return extractor


def pick_targets(args, test_margins):
    """Indices of --n-targets correctly classified test images (see --targets)."""
    correct = numpy.flatnonzero(test_margins > 0)
    if args.targets == 'smallest-margin':
        return correct[numpy.argsort(test_margins[correct], kind='stable')[:args.n_targets]]
    return numpy.sort(numpy.random.RandomState(args.seed).choice(correct, args.n_targets,
                                                                 replace=False))


def attack_target(args, attack, x_test, t_test, test_features, m):
    """Attack test image ``m`` with K = --n-perturb in increasing order until one succeeds."""
    start = time.time()
    ranking = attack.rank(x_test[m], t_test[m])
    attempts = []
    for k in args.n_perturb:
        result = attack.attack(x_test[m], t_test[m], ranking[:k])
        attempts.append(result)
        if result['success']:
            break
    final = attempts[-1]
    rest = numpy.arange(len(t_test)) != m
    accuracy = float((training_set_attack.margins(final['top'], test_features[rest],
                                                  t_test[rest]) > 0).mean())
    return {
        'test_index': int(m), 'label': int(t_test[m]),
        'success': final['success'],
        'n_changed': len(final['indices']) if final['success'] else None,
        'rest_accuracy': accuracy, 'time_s': round(time.time() - start, 1),
        'attempts': [{
            'k': len(a['indices']), 'success': a['success'], 'steps': a['steps'],
            'train_indices': a['indices'], 'linf': a['linf'], 'target_losses': a['losses'],
            'target_margins': a['margins'], 'predicted_loss_changes': a['predicted_changes'],
        } for a in attempts],
        '_final': final,
    }


def summarise(args, targets, clean_rest_accuracy):
    summary = {'n_targets': len(targets),
               'success_rate': float(numpy.mean([r['success'] for r in targets]))}
    summary['success_rate_with_at_most_k'] = {
        k: float(numpy.mean([r['success'] and r['n_changed'] <= k for r in targets]))
        for k in args.n_perturb}
    changed = [r['n_changed'] for r in targets if r['success']]
    summary['mean_images_changed_when_successful'] = float(numpy.mean(changed)) if changed else None
    changes = [r['rest_accuracy'] - a for r, a in zip(targets, clean_rest_accuracy)]
    summary['mean_rest_accuracy_change'] = float(numpy.mean(changes))
    summary['max_rest_accuracy_drop'] = float(-numpy.min(changes))
    for kind, flag in (('successful', True), ('failed', False)):
        values = [r['clean_margin'] for r in targets if r['success'] == flag]
        summary['median_clean_margin_' + kind] = float(numpy.median(values)) if values else None
    return summary


def main(argv=None):
    args = parse_args(argv)
    device = common.setup(args)
    start = time.time()
    os.makedirs(args.out, exist_ok=True)
    train, pretrain, test = load_task(args)

    extractor = None
    if args.features == 'mlp':
        extractor = pretrain_extractor(args, pretrain, device)
    features = training_set_attack.extract_features(extractor, train[0])
    with chainer.using_config('dtype', numpy.float64):
        top = L.Linear(features.shape[1], 2, initialW=chainer.initializers.Zero())
    top.to_device(device)
    grad_norm = fit_lbfgs(top, training_set_attack.LOSS, (device.send(features),
                                                          device.send(train[1])),
                          args.weight_decay, max_iter=10000)
    test_features = training_set_attack.extract_features(extractor, test[0])
    test_margins = training_set_attack.margins(top, test_features, test[1])
    train_margins = training_set_attack.margins(top, features, train[1])
    targets = pick_targets(args, test_margins)

    attack = training_set_attack.TrainingSetAttack(
        extractor, top, train[0], train[1], args.weight_decay, args.epsilon, args.step_size,
        args.steps)
    results, clean_rest = [], []
    for n, m in enumerate(targets):
        rest = numpy.arange(len(test[1])) != m
        clean_rest.append(float((test_margins[rest] > 0).mean()))
        result = attack_target(args, attack, test[0], test[1], test_features, m)
        result['clean_margin'] = float(test_margins[m])
        results.append(result)
        if not args.no_progress:
            print('target {:2d}/{} test {:4d} margin {:6.3f}: {} (K={}, steps {}, {:.0f} s)'.format(
                n + 1, len(targets), m, test_margins[m],
                'flipped' if result['success'] else 'not flipped',
                len(result['_final']['indices']), result['_final']['steps'], result['time_s']),
                flush=True)

    figure = plot(args, attack, test, results)
    summary = summarise(args, results, clean_rest)
    summary.update(
        n_train=len(train[1]), n_test=len(test[1]), n_features=int(features.shape[1]),
        top_parameters=int(top.W.size + top.b.size), fit_grad_norm=grad_norm,
        retrain_grad_norm_max=max(attack.retrain.grad_norms),
        clean_train_accuracy=float((train_margins > 0).mean()),
        clean_test_accuracy=float((test_margins > 0).mean()),
        wall_time_s=round(time.time() - start, 1))
    numpy.savez_compressed(
        os.path.join(args.out, 'attacked.npz'),
        test_indices=[r['test_index'] for r in results],
        **{'train_indices_{}'.format(r['test_index']): r['_final']['indices'] for r in results},
        **{'x_{}'.format(r['test_index']): r['_final']['x'] for r in results})
    for r in results:
        del r['_final']
    path = os.path.join(args.out, 'results.json')
    common.write_json(path, {'settings': vars(args), 'summary': summary, 'targets': results})
    print_summary(args, summary, results, path, figure)
    return summary


def plot(args, attack, test, results):
    """attack.png: per shown target (flipped ones first), its test image and its first changed
    training image."""
    shown = ([r for r in results if r['success']] + [r for r in results if not r['success']])
    shown = shown[:args.n_show]
    rows = [(r, r['_final']) for r in shown]
    return plots.plot_perturbations(
        [attack.x_train[f['indices'][0]] for _, f in rows],
        [f['x'][0] for _, f in rows],
        os.path.join(args.out, 'attack.png'),
        targets=[test[0][r['test_index']] for r, _ in rows],
        titles=['test {} ({})\n{}, K={}'.format(
            r['test_index'], ci.CLASS_NAMES['fashion-mnist'][args.classes[r['label']]],
            'flipped' if r['success'] else 'kept', len(f['indices'])) for r, f in rows],
        epsilon=args.epsilon)


def print_summary(args, summary, results, path, figure):
    print('=' * 72)
    print('Training-set attack, Fashion-MNIST classes {} ({} features, N={}, eps={:.4f})'.format(
        args.classes, args.features, summary['n_train'], args.epsilon))
    print('clean accuracy: train {:.4f}, test {:.4f}; top fit max|grad| {:.1e}, retrain {:.1e}'
          .format(summary['clean_train_accuracy'], summary['clean_test_accuracy'],
                  summary['fit_grad_norm'], summary['retrain_grad_norm_max']))
    print('targets ({}): clean margins {}'.format(args.targets, ' '.join(
        '{:.2f}'.format(r['clean_margin']) for r in results)))
    print('success rate {:.2f} ({} of {}); with at most K images changed: {}'.format(
        summary['success_rate'], sum(r['success'] for r in results), len(results),
        ', '.join('K<={}: {:.2f}'.format(k, v)
                  for k, v in summary['success_rate_with_at_most_k'].items())))
    print('mean images changed when successful: {}; accuracy on the rest of the test set: mean '
          'change {:+.4f}, largest drop {:.4f}'.format(
              summary['mean_images_changed_when_successful'],
              summary['mean_rest_accuracy_change'], summary['max_rest_accuracy_drop']))
    print('wall time {:.0f} s; {} and {}'.format(summary['wall_time_s'], path, figure))


if __name__ == '__main__':
    main()
