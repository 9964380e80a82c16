"""Cost of the EK-FAC (or K-FAC) pipeline against a training epoch, on the benchmark models
(``benchmarks/common.py``).

One process, one run: ``python benchmarks/kfac_speed.py --help``. Per model, over N training
examples (Fashion-MNIST when installed, else random data; untrained weights: the cost does not
depend on their values), each a minimum over ``--repeats`` rounds with a fresh solver:

* ``epoch``: one training epoch (forward, backward, MomentumSGD update), the unit;
* ``fit``: the factors (one pass; EK-FAC a second for the eigenvalues);
* ``influence_100``: ``influence()`` for 100 test points after the fit (solve + scoring);
* ``self_influence``: ``self_influence()`` after the fit;
* ``pipeline``: the sum of the three.

Prints seconds and ratios to the epoch; writes them as JSON to ``--out`` when given.
"""
import argparse
import json
import sys
import time

import numpy

import chainer
from chainer.datasets import TupleDataset

import chainer_influence as ci

try:
    from benchmarks.common import MODELS, load_data, train_epoch
except ImportError:  # run as a script from the repository root
    sys.path.insert(0, '.')
    from benchmarks.common import MODELS, load_data, train_epoch

SOLVERS = {'ekfac': ci.EKFACSolver, 'kfac': ci.KFACSolver}


def measure(name, n, n_test, solver_class, batch_size, repeats, random_data=False, seed=0):
    """{phase: seconds} (minima over ``repeats``) and {phase: ratio to the epoch} for one model."""
    numpy.random.seed(seed)  # Chainer's initialisers
    model = MODELS[name]()
    (x, t), (x_test, t_test), source = load_data(n, n_test, random_data=random_data, seed=seed)
    x, x_test = (a.reshape((-1,) + model.INPUT_SHAPE) for a in (x, x_test))
    train, test = TupleDataset(x, t), (x_test, t_test)
    optimizer = chainer.optimizers.MomentumSGD(lr=0.0)  # lr 0: the weights stay as they are
    optimizer.setup(model)
    times = {k: float('inf') for k in ('epoch', 'fit', 'influence_100', 'self_influence')}
    for _ in range(repeats):
        start = time.perf_counter()
        train_epoch(model, optimizer, train, batch_size)
        times['epoch'] = min(times['epoch'], time.perf_counter() - start)
        calc = ci.InfluenceFunctions(model, train, solver=solver_class(progress=False),
                                     batch_size=batch_size, progress=False)
        for phase, fn in (('fit', lambda: calc.solver.fit(calc.curvature)),
                          ('influence_100', lambda: calc.influence(test)),
                          ('self_influence', calc.self_influence)):
            start = time.perf_counter()
            fn()
            times[phase] = min(times[phase], time.perf_counter() - start)
    times['pipeline'] = times['fit'] + times['influence_100'] + times['self_influence']
    ratios = {k: v / times['epoch'] for k, v in times.items() if k != 'epoch'}
    return {'n': n, 'source': source, 'times_s': times, 'over_epoch': ratios}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', nargs='+', choices=sorted(MODELS), default=['mlp', 'cnn'])
    parser.add_argument('--n', type=int, nargs='+', default=[3000, 5000],
                        help='training examples per model (one value: all models)')
    parser.add_argument('--solver', choices=sorted(SOLVERS), default='ekfac')
    parser.add_argument('--batch-size', type=int, default=256)
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--random-data', action='store_true',
                        help='random data even when Fashion-MNIST is installed')
    parser.add_argument('--out', default=None, help='JSON output file')
    args = parser.parse_args(argv)
    sizes = args.n * len(args.models) if len(args.n) == 1 else args.n
    results = {}
    for name, n in zip(args.models, sizes):
        results[name] = measure(name, n, 100, SOLVERS[args.solver], args.batch_size,
                                args.repeats, args.random_data)
        r = results[name]
        print('{} N={} ({}): epoch {:.3f} s; {}'.format(
            name, n, r['source'], r['times_s']['epoch'], ', '.join(
                '{} {:.3f} s = {:.1f} epochs'.format(k, r['times_s'][k], v)
                for k, v in r['over_epoch'].items())), flush=True)
    if args.out:
        with open(args.out, 'w') as f:
            json.dump({'command': sys.argv, 'solver': args.solver, 'models': results}, f,
                      indent=1)
    return results


if __name__ == '__main__':
    main()
