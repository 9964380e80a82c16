"""Speed and memory of ``InfluenceFunctions.influence()`` against a training epoch and a naive loop.

One process, one run (``python benchmarks/run.py --help``), on two models over N training examples
(Fashion-MNIST from /usr/share/datasets/fashion-mnist/ when installed, else random data of the same
shape):

* ``mlp``: Linear 784-100, ReLU, Linear 100-100, ReLU, Linear 100-10 (P = 89,610);
* ``cnn``: Conv 5x5 1->16, ReLU, max-pool 2, Conv 5x5 16->32, ReLU, max-pool 2, Linear 512-10
  (P = 18,378), on 1x28x28 images.

What is measured is described where it is measured: ``benchmarks/scoring.py`` (a training epoch,
``influence()`` given s_test, the naive loop, memory, profile) and ``benchmarks/solvers.py``
(``influence()`` including the solve). The JSON written to ``--out`` has the keys ``command``,
``settings``, ``machine``, ``wall_s`` and ``models``; each model has ``architecture``,
``n_params``, ``times_s``, ``extrapolated``, ``solvers``, ``naive_check``, ``memory``,
``profile``, ``ratios`` and ``targets`` (see ``TARGETS``).
"""
import argparse
import json
import os
import sys

if __package__ in (None, ''):   # run as a script: the repository root makes `benchmarks` a package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import time  # NOQA: E402

import numpy  # NOQA: E402

from chainer.datasets import TupleDataset  # NOQA: E402

import chainer_influence as ci  # NOQA: E402

from benchmarks import common, scoring, solvers  # NOQA: E402

# ratio name -> (comparison, target)
TARGETS = {
    'b1_over_a': ('<=', 2.0),
    'c_over_b1': ('>=', 30.0),
    'b100_over_b1': ('<=', 5.0),
    'b100_ekfac_over_a': ('<=', 5.0),
    'memory_growth_tracemalloc': ('<=', 0.10),
    'memory_growth_rss': ('<=', 0.10),
}


def compute_ratios(times, memory):
    """The ratios the targets speak of; memory growth from N to 4N as a fraction (left out where
    the peak at N is 0: an RSS peak below what the allocator already holds is not seen)."""
    ratios = {'b1_over_a': times['b1'] / times['a'], 'c_over_b1': times['c'] / times['b1'],
              'c_over_a': times['c'] / times['a'], 'b100_over_b1': times['b100'] / times['b1']}
    for key in ('b100_cg', 'b100_lissa', 'b100_ekfac', 'ekfac_fit'):
        if key in times:
            ratios[key + '_over_a'] = times[key] / times['a']
    for kind, key in (('tracemalloc', 'tracemalloc_peak_mib'), ('rss', 'rss_peak_growth_mib')):
        if memory and memory['n'][key]:
            ratios['memory_growth_' + kind] = memory['4n'][key] / memory['n'][key] - 1.0
    return ratios


def check_targets(ratios):
    """``{ratio: {'value', 'target', 'met'}}`` for the ratios that have a target."""
    compare = {'<=': lambda a, b: a <= b, '>=': lambda a, b: a >= b}
    return {name: {'value': ratios[name], 'target': '{} {:g}'.format(op, bound),
                   'met': bool(compare[op](ratios[name], bound))}
            for name, (op, bound) in TARGETS.items() if name in ratios}


def benchmark_model(name, data, args):
    """All measurements for one model; returns its JSON section."""
    numpy.random.seed(args.seed)  # Chainer's default initialisers draw from numpy's global RNG
    model = common.MODELS[name]()
    space = ci.ParameterSpace(model)
    (x, t), (x_test, t_test), _ = data
    x, x_test = (a.reshape((-1,) + model.INPUT_SHAPE) for a in (x, x_test))
    train = TupleDataset(x[:args.n], t[:args.n])
    tests = {m: (x_test[:m], t_test[:m]) for m in (1, common.M_MANY)}
    s_test = numpy.random.RandomState(args.seed).standard_normal(
        (common.M_MANY, space.size)).astype(numpy.float32)

    times, profile, naive_check = scoring.scoring_times(model, train, x, t, tests, s_test, args)
    solved, estimated, solver_settings = solvers.solver_times(model, train, tests, times, args)
    times.update(solved)
    solved, solver_settings['ekfac'] = solvers.ekfac_times(model, train, tests, args)
    times.update(solved)
    memory = {} if args.no_memory else scoring.measure_memory(name, space, x, t, tests[1],
                                                              s_test, args)
    ratios = compute_ratios(times, memory)
    return {'architecture': model.ARCHITECTURE, 'n_params': space.size, 'times_s': times,
            'extrapolated': ['c'] + estimated, 'solvers': solver_settings,
            'naive_check': naive_check, 'memory': memory, 'profile': profile,
            'ratios': ratios, 'targets': check_targets(ratios)}


TABLE_ROWS = scoring.ROWS + solvers.ROWS
TABLE_NOTE = ('Extrapolated: c from {} examples to N; a b100 solve from the iterations that fitted '
              'the budget to all (none fitted: 100 times the b1 solve, an upper bound).')


# ---- command line ----------------------------------------------------------------------------
class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the options' help, the module docstring as written."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    parser.add_argument('--n', type=int, default=5000, help='training examples N')
    parser.add_argument('--models', nargs='+', choices=sorted(common.MODELS),
                        default=['mlp', 'cnn'])
    parser.add_argument('--batch-size', type=int, default=256,
                        help='batch size of the training epoch and of the scoring pass')
    parser.add_argument('--repeats', type=int, default=3,
                        help='timed rounds (the minimum is kept)')
    parser.add_argument('--naive-n', type=int, default=200,
                        help='examples timed in the naive loop (extrapolated to N)')
    parser.add_argument('--cg-iters', type=int, default=5, help='CG iterations (tol 0)')
    parser.add_argument('--lissa-depth', type=int, default=100, help='LiSSA recursion depth')
    parser.add_argument('--lissa-batch', type=int, default=32, help='LiSSA minibatch size')
    parser.add_argument('--damping', type=float, default=None,
                        help='solver damping; None: the largest |eigenvalue| of H, estimated')
    parser.add_argument('--ekfac-fisher', choices=('sampled', 'exact'), default='sampled',
                        help='EK-FAC output-gradient statistics')
    parser.add_argument('--solver-repeats', type=int, default=1,
                        help='timed calls including a solve (no warm-up)')
    parser.add_argument('--solver-budget', type=float, default=60.0,
                        help='seconds a b100 call with a solve may take by estimate; longer '
                             'ones run fewer iterations, scaled to all')
    parser.add_argument('--no-memory', action='store_true', help='skip the memory measurements')
    parser.add_argument('--data-dir', default=None,
                        help='Fashion-MNIST IDX folder; None: Debian\'s')
    parser.add_argument('--random-data', action='store_true',
                        help='random data even when Fashion-MNIST is installed')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default='result/benchmark.json', help='JSON output file')
    return parser.parse_args(argv)


def main(argv=None):
    """Run the benchmark, print the table, write the JSON; returns the results dict."""
    args = parse_args(argv)
    start = time.perf_counter()
    data = common.load_data(scoring.MEMORY_FACTOR * args.n, common.M_MANY, args.data_dir,
                            args.random_data, args.seed)
    results = {'command': ' '.join([os.path.basename(sys.executable), 'benchmarks/run.py'] +
                                   (sys.argv[1:] if argv is None else list(argv))),
               'settings': dict(vars(args), data=data[2], m_many=common.M_MANY,
                                memory_factor=scoring.MEMORY_FACTOR),
               'machine': common.machine_info(), 'models': {}}
    for name in args.models:
        results['models'][name] = benchmark_model(name, data, args)
    results['wall_s'] = time.perf_counter() - start
    if os.path.dirname(args.out):
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(results, f, indent=1)
    print(common.format_table(results, TABLE_ROWS,
                              [TABLE_NOTE.format(results['settings']['naive_n'])]))
    print('wall time {:.0f} s; JSON in {}'.format(results['wall_s'], args.out))
    return results


if __name__ == '__main__':
    main()
