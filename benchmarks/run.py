"""Speed and memory of ``InfluenceFunctions.influence()`` against a training epoch and a naive loop.

One process, one run (``python benchmarks/run.py --help``), on two models over N training examples
(Fashion-MNIST from /usr/share/datasets/fashion-mnist/ when installed, else random data of the same
shape):

* ``mlp``: Linear 784-100, ReLU, Linear 100-100, ReLU, Linear 100-10 (P = 89,610);
* ``cnn``: Conv 5x5 1->16, ReLU, max-pool 2, Conv 5x5 16->32, ReLU, max-pool 2, Linear 512-10
  (P = 18,378), on 1x28x28 images.

Measured (times are minima over ``--repeats`` rounds after one warm-up round; a round calls each
of a, b1, b100 and c once, in turn, so that they meet the same load on a shared machine):

* ``a``: one training epoch over the N examples (forward, backward, MomentumSGD update, batches of
  ``--batch-size`` drawn the way the scoring pass draws them): the floor;
* ``b1``, ``b100``: ``influence()`` for 1 and 100 test points given their s_test (no solve);
  ``b1_cg``, ``b100_cg``, ``b1_lissa``, ``b100_lissa``: the same including the solve, with CG
  (``--cg-iters`` iterations, tol 0) or LiSSA (``--lissa-depth`` steps on minibatches of
  ``--lissa-batch``), see :func:`solver_times`; a b100 solve that does not fit
  ``--solver-budget`` seconds runs fewer iterations and is scaled (listed in ``extrapolated``);
* ``c``: the naive loop (one batch-1 forward and backward per training example, flatten the
  gradient, dot with s_test) timed on ``--naive-n`` examples (``c_subset``) and extrapolated to N
  (listed in ``extrapolated``); ``naive_check`` compares its scores with ``influence()``'s;
* peak memory of ``influence()`` for one test point at N and 4N, each in a fresh process: the
  tracemalloc peak (numpy's allocations are traced) and the growth of the peak resident set;
* ``profile``: shares of a b1 call under cProfile (:func:`profile_fractions`) and the speed of the
  extra contraction work of b100 over b1, to compare with ``machine.sgemm_gflops``.

s_test is random in the ``b`` and ``c`` timings: its values do not change the work done.
The JSON written to ``--out`` has the keys ``command``, ``settings``, ``machine``, ``wall_s`` and
``models``; each model has ``architecture``, ``n_params``, ``times_s``, ``extrapolated``,
``solvers``, ``naive_check``, ``memory``, ``profile``, ``ratios`` and ``targets`` (see ``TARGETS``).
"""
import argparse
import cProfile
import json
import multiprocessing
import os
import platform
import pstats
import sys
import time
import tracemalloc
import warnings

import numpy

import chainer
import chainer.functions as F
import chainer.links as L
from chainer.dataset import concat_examples
from chainer.datasets import TupleDataset
from chainer.functions.connection.convolution_2d import Convolution2DGradW
from chainer.functions.connection.linear import LinearGradWeight

import chainer_influence as ci
from chainer_influence.batches import iterate_batches
from chainer_influence.hooks import PerSampleGradientHook

M_MANY = 100          # test points in the b100 timings
MEMORY_FACTOR = 4     # memory is measured at N and MEMORY_FACTOR * N
EIGENVALUE_SAMPLE = 1024  # training examples for the (untimed) top-eigenvalue estimate

# ratio name -> (comparison, target)
TARGETS = {
    'b1_over_a': ('<=', 2.0),
    'c_over_b1': ('>=', 30.0),
    'b100_over_b1': ('<=', 5.0),
    'memory_growth_tracemalloc': ('<=', 0.10),
    'memory_growth_rss': ('<=', 0.10),
}


class MLP(chainer.Chain):
    """784-100-100-10 with ReLU: a fully connected classifier for flat 28x28 images."""

    ARCHITECTURE = 'Linear 784-100, ReLU, Linear 100-100, ReLU, Linear 100-10'
    INPUT_SHAPE = (784,)

    def __init__(self):
        super().__init__()
        with self.init_scope():
            self.l1 = L.Linear(784, 100)
            self.l2 = L.Linear(100, 100)
            self.l3 = L.Linear(100, 10)

    def forward(self, x):
        return self.l3(F.relu(self.l2(F.relu(self.l1(x)))))


class CNN(chainer.Chain):
    """A LeNet-like convolutional classifier for 1x28x28 images."""

    ARCHITECTURE = ('Conv 5x5 1->16, ReLU, max-pool 2, Conv 5x5 16->32, ReLU, max-pool 2, '
                    'Linear 512-10')
    INPUT_SHAPE = (1, 28, 28)

    def __init__(self):
        super().__init__()
        with self.init_scope():
            self.c1 = L.Convolution2D(1, 16, 5)
            self.c2 = L.Convolution2D(16, 32, 5)
            self.fc = L.Linear(512, 10)

    def forward(self, x):
        h = F.max_pooling_2d(F.relu(self.c1(x)), 2)
        h = F.max_pooling_2d(F.relu(self.c2(h)), 2)
        return self.fc(h)


MODELS = {'mlp': MLP, 'cnn': CNN}


# ---- data ------------------------------------------------------------------------------------
def load_data(n_train, n_test, data_dir=None, random_data=False, seed=0):
    """``((x, t), (x_test, t_test), source)``: flat (784,) float32 images and int32 labels.

    Fashion-MNIST's first ``n_train`` training and ``n_test`` test examples (repeated when more are
    asked for than it has) when installed and ``random_data`` is False; else uniform random pixels
    and labels.
    """
    if not random_data:
        try:
            splits = ci.load_fashion_mnist(data_dir)
            return (_first(splits[0], n_train), _first(splits[1], n_test), 'fashion-mnist')
        except ci.DataNotFoundError:
            pass
    rng = numpy.random.RandomState(seed)

    def random_split(n):
        return (rng.uniform(size=(n, 784)).astype(numpy.float32),
                rng.randint(0, 10, n).astype(numpy.int32))

    return random_split(n_train), random_split(n_test), 'random'


def _first(dataset, n):
    """The first n examples of a dataset of tuples as arrays, cycling when it is shorter."""
    x, t = concat_examples(dataset[:min(n, len(dataset))])
    index = numpy.arange(n) % len(x)
    return x[index], t[index]


# ---- measurements ----------------------------------------------------------------------------
def best_times(fns, repeats, warmup=True):
    """``{name: minimum wall time in seconds of fns[name]()}`` over ``repeats`` rounds.

    Each round calls every function once, in turn, so that all meet the same load on a shared
    machine; with ``warmup`` one untimed round comes first.
    """
    times = {name: float('inf') for name in fns}
    for round_ in range(repeats + int(warmup)):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_ >= int(warmup):
                times[name] = min(times[name], time.perf_counter() - start)
    return times


def best_time(fn, repeats, warmup=True):
    """Minimum wall time in seconds of ``fn()`` over ``repeats`` calls (see :func:`best_times`)."""
    return best_times({'fn': fn}, repeats, warmup)['fn']


def sgemm_gflops(size=1024, repeats=5):
    """The machine's float32 matrix-product speed (GFLOP/s) for ``size``-square matrices."""
    a = numpy.random.RandomState(0).standard_normal((size, size)).astype(numpy.float32)
    seconds = best_time(lambda: a @ a, repeats)
    return 2.0 * size ** 3 / seconds / 1e9


def train_epoch(model, optimizer, train, batch_size):
    """One epoch of batched forward, backward and optimizer update over ``train``."""
    for _, _, (x, t) in iterate_batches(train, batch_size):
        loss = F.softmax_cross_entropy(model(x), t)
        model.cleargrads()
        loss.backward()
        optimizer.update()


def naive_scores(model, x, t, s_test):
    """-grad L(z_i) . s_test for each row of x, by one batch-1 backward per example (no hook)."""
    params = ci.ParameterSpace(model).params   # the flat P layout of s_test
    scores = numpy.empty(len(x))
    with chainer.using_config('train', False):
        for i in range(len(x)):
            model.cleargrads()
            F.softmax_cross_entropy(model(x[i:i + 1]), t[i:i + 1]).backward()
            grad = numpy.concatenate([p.grad.ravel() for p in params])
            scores[i] = -grad.dot(s_test)
    return scores


def _code_key(function):
    code = function.__code__
    return code.co_filename, code.co_firstlineno, code.co_name


def profile_fractions(fn):
    """Fractions of ``fn()``'s time under cProfile spent in the named parts of a scoring pass.

    ``weight_batch_gradient``: Chainer's batch gradients of Linear and Convolution2D weights (the
    hook back-propagates to the parameters, so Chainer computes them; only the batch-sum check
    uses them); ``per_example_rules``: the hook's per-example contractions;
    ``batch_sum_check``: the hook's check that they add up to the batch gradient.
    """
    profiler = cProfile.Profile()
    profiler.runcall(fn)
    stats = pstats.Stats(profiler).stats   # {(file, line, name): (cc, nc, tottime, cumtime, ..)}
    total = sum(entry[2] for entry in stats.values())

    def fraction(*functions):
        keys = {_code_key(f) for f in functions}
        return sum(entry[3] for key, entry in stats.items() if key in keys) / total

    return {
        'weight_batch_gradient': fraction(LinearGradWeight.forward, Convolution2DGradW.forward_cpu),
        'per_example_rules': fraction(PerSampleGradientHook.backward_postprocess),
        'batch_sum_check': fraction(PerSampleGradientHook._check_sums),
        'profiled_s': total,
    }


def _status_mib(field):
    """A memory field of /proc/self/status (Linux; kB there) in MiB."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) / 1024.0
    raise OSError('no {} in /proc/self/status'.format(field))


def peak_rss_growth_mib(fn):
    """How far the resident set's peak rose above its size before ``fn()``; None off Linux.

    The kernel's peak mark (VmHWM) is reset first through /proc/self/clear_refs. ``ru_maxrss`` would
    not do: a spawned process inherits its parent's peak through exec, and the reset does not
    lower that part.
    """
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        before = _status_mib('VmRSS')
    except OSError:
        fn()
        return None
    fn()
    return _status_mib('VmHWM') - before


def memory_of_influence(model_name, param_arrays, train, test, s_test, batch_size):
    """Peak memory of one ``influence(test, s_test)`` call; meant to run in a fresh process.

    ``rss_peak_growth_mib`` (:func:`peak_rss_growth_mib`) comes from a first call,
    ``tracemalloc_peak_mib`` from a second, traced call.
    """
    model = MODELS[model_name]()
    for param, array in zip(ci.ParameterSpace(model).params, param_arrays):
        param.array[...] = array
    calc = ci.InfluenceFunctions(model, TupleDataset(*train), solver=ci.CGSolver(),
                                 batch_size=batch_size, progress=False)
    rss_growth = peak_rss_growth_mib(lambda: calc.influence(test, s_test=s_test))
    tracemalloc.start()
    calc.influence(test, s_test=s_test)
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {'n_train': len(train[0]), 'tracemalloc_peak_mib': traced_peak / 2.0 ** 20,
            'rss_peak_growth_mib': rss_growth}


def in_fresh_process(fn, *args):
    """``fn(*args)`` in a newly spawned Python process (nothing inherited but the arguments)."""
    with multiprocessing.get_context('spawn').Pool(1) as pool:
        return pool.apply(fn, args)


def top_eigenvalue(model, train, batch_size):
    """Power-iteration estimate (10 steps) of the largest |eigenvalue| of H on a training sample."""
    curvature = ci.Curvature(model, ci.softmax_cross_entropy_loss, train, batch_size=batch_size)
    sample = numpy.arange(min(EIGENVALUE_SAMPLE, curvature.n_train))
    return curvature.top_eigenvalue(n_iter=10, indices=sample)


ITERATIONS = {'cg': 'max_iter', 'lissa': 'depth'}   # each solver's iteration-count attribute


def solver_times(model, train, tests, times, args):
    """``(times, extrapolated keys, settings)`` of ``influence()`` including the solve.

    CG runs ``--cg-iters`` iterations (tol 0), LiSSA ``--lissa-depth`` steps with the scale that
    ``scale='auto'`` would choose; both with ``--damping``, by default the estimated largest
    |eigenvalue| of H, so that CG meets no negative curvature in this not fully trained,
    non-convex model (damping changes the accuracy of a solve, not its cost). The estimate is
    untimed. Each timing is one call (``--solver-repeats``) without warm-up.

    ``b1_<solver>`` runs all iterations. For ``b100_<solver>``, 100 times the per-iteration solve
    cost at M = 1 bounds that at M = 100 (the HVPs share the first-order graph among right-hand
    sides); as many iterations as fit ``--solver-budget`` by that bound are run and the solve
    time is scaled to all iterations. Where not even one fits, the bound itself is reported.
    """
    top = top_eigenvalue(model, train, args.batch_size)
    damping = top if args.damping is None else args.damping
    solvers = {'cg': ci.CGSolver(max_iter=args.cg_iters, tol=0.0, progress=False),
               'lissa': ci.LiSSASolver(depth=args.lissa_depth, batch_size=args.lissa_batch,
                                       scale=ci.LiSSASolver.AUTO_SCALE_FACTOR * (top + damping),
                                       progress=False)}
    out, extrapolated, measured_iterations = {}, [], {}
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='CG did not converge')
        for kind, solver in solvers.items():
            calc = ci.InfluenceFunctions(model, train, solver=solver, damping=damping,
                                         batch_size=args.batch_size, progress=False)
            iterations = getattr(solver, ITERATIONS[kind])
            out['b1_' + kind] = best_time(lambda: calc.influence(tests[1]),
                                          args.solver_repeats, warmup=False)
            bound = M_MANY * (out['b1_' + kind] - times['b1']) / iterations
            fit = min(iterations, int((args.solver_budget - times['b100']) // max(bound, 1e-9)))
            key = 'b100_' + kind
            measured_iterations[key] = max(fit, 0)
            if fit < 1:
                out[key] = times['b100'] + bound * iterations
            else:
                setattr(solver, ITERATIONS[kind], fit)
                seconds = best_time(lambda: calc.influence(tests[M_MANY]), args.solver_repeats,
                                    warmup=False)
                setattr(solver, ITERATIONS[kind], iterations)
                out[key] = times['b100'] + (seconds - times['b100']) * iterations / fit
            if fit < iterations:
                extrapolated.append(key)
    settings = {'damping': damping, 'top_eigenvalue': top, 'repeats': args.solver_repeats,
                'eigenvalue_sample': min(EIGENVALUE_SAMPLE, len(train)),
                'cg': {'iterations': args.cg_iters, 'tol': 0.0},
                'lissa': {'depth': args.lissa_depth, 'batch_size': args.lissa_batch,
                          'scale': solvers['lissa'].scale},
                'measured_iterations': measured_iterations}
    return out, extrapolated, settings


def compute_ratios(times, memory):
    """The ratios the targets speak of; memory growth from N to 4N as a fraction (left out where
    the peak at N is 0: an RSS peak below what the allocator already holds is not seen)."""
    ratios = {'b1_over_a': times['b1'] / times['a'], 'c_over_b1': times['c'] / times['b1'],
              'c_over_a': times['c'] / times['a'], 'b100_over_b1': times['b100'] / times['b1']}
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
    model = MODELS[name]()
    space = ci.ParameterSpace(model)
    (x, t), (x_test, t_test), _ = data
    x, x_test = (a.reshape((-1,) + model.INPUT_SHAPE) for a in (x, x_test))
    n, k = args.n, min(args.naive_n, args.n)
    train = TupleDataset(x[:n], t[:n])
    tests = {m: (x_test[:m], t_test[:m]) for m in (1, M_MANY)}
    s_test = numpy.random.RandomState(args.seed).standard_normal(
        (M_MANY, space.size)).astype(numpy.float32)
    optimizer = chainer.optimizers.MomentumSGD(lr=0.01, momentum=0.9)
    optimizer.setup(model)
    calc = ci.InfluenceFunctions(model, train, solver=ci.CGSolver(),
                                 batch_size=args.batch_size, progress=False)

    times = best_times({
        'a': lambda: train_epoch(model, optimizer, train, args.batch_size),
        'b1': lambda: calc.influence(tests[1], s_test=s_test[:1]),
        'b100': lambda: calc.influence(tests[M_MANY], s_test=s_test),
        'c_subset': lambda: naive_scores(model, x[:k], t[:k], s_test[0]),
    }, args.repeats)
    times['c'] = times['c_subset'] * n / k
    profile = profile_fractions(lambda: calc.influence(tests[1], s_test=s_test[:1]))
    # the extra time of 100 test points over 1 is contraction work: 2 (M - 1) P flops per example
    profile['b100_extra_gflops_per_s'] = (2.0 * n * (M_MANY - 1) * space.size /
                                          (times['b100'] - times['b1']) / 1e9)
    naive = naive_scores(model, x[:k], t[:k], s_test[0])
    hooked = calc.influence(tests[1], s_test=s_test[:1])[0, :k]
    naive_check = {'examples': k, 'max_abs_diff': float(numpy.abs(naive - hooked).max()),
                   'max_abs_score': float(numpy.abs(naive).max())}

    solved, estimated, solver_settings = solver_times(model, train, tests, times, args)
    times.update(solved)
    memory = {} if args.no_memory else measure_memory(name, space, x, t, tests[1], s_test, args)
    ratios = compute_ratios(times, memory)
    return {'architecture': model.ARCHITECTURE, 'n_params': space.size, 'times_s': times,
            'extrapolated': ['c'] + estimated, 'solvers': solver_settings,
            'naive_check': naive_check, 'memory': memory, 'profile': profile,
            'ratios': ratios, 'targets': check_targets(ratios)}


def measure_memory(name, space, x, t, test, s_test, args):
    """``{'n': ..., '4n': ...}``: :func:`memory_of_influence` for one test point, fresh processes."""
    params = [p.array for p in space.params]
    return {label: in_fresh_process(memory_of_influence, name, params, (x[:size], t[:size]),
                                    test, s_test[:1], args.batch_size)
            for label, size in (('n', args.n), ('4n', MEMORY_FACTOR * args.n))}


# ---- report ----------------------------------------------------------------------------------
def machine_info():
    """Core counts, float32 matmul speed, platform, library versions, BLAS and its threads."""
    info = {'cpu_count': os.cpu_count(), 'cpus_usable': len(os.sched_getaffinity(0)),
            'sgemm_gflops': sgemm_gflops(),
            'platform': platform.platform(), 'python': platform.python_version(),
            'chainer': chainer.__version__, 'numpy': numpy.__version__}
    try:
        blas = numpy.show_config(mode='dicts')['Build Dependencies']['blas']
        info['blas'] = {key: blas.get(key) for key in ('name', 'version', 'openblas configuration')}
    except (TypeError, KeyError):   # numpy < 1.25 prints its configuration only
        info['blas'] = None
    try:
        from threadpoolctl import threadpool_info
        info['blas_threads'] = [{key: pool.get(key) for key in ('internal_api', 'num_threads')}
                                for pool in threadpool_info()]
    except ImportError:
        pass
    return info


TABLE_ROWS = [  # (label, section, key, unit)
    ('a: training epoch', 'times_s', 'a', 's'),
    ('b1: influence, 1 test point, s_test given', 'times_s', 'b1', 's'),
    ('b100: influence, 100 test points, s_test given', 'times_s', 'b100', 's'),
    ('b1 + CG solve', 'times_s', 'b1_cg', 's'),
    ('b100 + CG solve', 'times_s', 'b100_cg', 's'),
    ('b1 + LiSSA solve', 'times_s', 'b1_lissa', 's'),
    ('b100 + LiSSA solve', 'times_s', 'b100_lissa', 's'),
    ('c: naive loop (batch-1 backward + dot)', 'times_s', 'c', 's'),
    ('b1 / a (target <= 2)', 'ratios', 'b1_over_a', 'x'),
    ('c / b1 (target >= 30)', 'ratios', 'c_over_b1', 'x'),
    ('c / a', 'ratios', 'c_over_a', 'x'),
    ('b100 / b1 (target <= 5)', 'ratios', 'b100_over_b1', 'x'),
    ('W batch gradients, share of b1 (cProfile)', 'profile', 'weight_batch_gradient', 'share'),
    ('tracemalloc peak at N', 'memory', ('n', 'tracemalloc_peak_mib'), 'MiB'),
    ('tracemalloc peak at 4N', 'memory', ('4n', 'tracemalloc_peak_mib'), 'MiB'),
    ('growth N -> 4N (target <= 10 %)', 'ratios', 'memory_growth_tracemalloc', '%'),
    ('peak RSS growth at N', 'memory', ('n', 'rss_peak_growth_mib'), 'MiB'),
    ('peak RSS growth at 4N', 'memory', ('4n', 'rss_peak_growth_mib'), 'MiB'),
    ('growth N -> 4N (target <= 10 %)', 'ratios', 'memory_growth_rss', '%'),
]


def _cell(section, key, unit, extrapolated):
    """One table cell: ``section[key]`` (``key`` a tuple: nested) formatted in ``unit``."""
    value = section
    for part in key if isinstance(key, tuple) else (key,):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return 'n/a'
    text = {'s': '{:.3g} s', 'x': '{:.3g}x', '%': '{:+.1%}', 'share': '{:.0%}',
            'MiB': '{:.1f} MiB'}[unit].format(value)
    return text + (' (extrapolated)' if key in extrapolated else '')


def format_table(results):
    """The results as a Markdown table: one row a measurement, one column a model."""
    models = results['models']
    header = ['N = {}'.format(results['settings']['n'])] + [
        '{} (P = {:,})'.format(name, models[name]['n_params']) for name in models]
    lines = ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
    for label, section, key, unit in TABLE_ROWS:
        cells = [_cell(models[name][section], key, unit, models[name]['extrapolated'])
                 for name in models]
        lines.append('| ' + ' | '.join([label] + cells) + ' |')
    lines.append('\nExtrapolated: c from {} examples to N; a b100 solve from the iterations that '
                 'fitted the budget to all (none fitted: 100 times the b1 solve, an upper bound).'
                 .format(results['settings']['naive_n']))
    return '\n'.join(lines)


# ---- command line ----------------------------------------------------------------------------
class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the options' help, the module docstring as written."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    parser.add_argument('--n', type=int, default=5000, help='training examples N')
    parser.add_argument('--models', nargs='+', choices=sorted(MODELS), default=['mlp', 'cnn'])
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
    data = load_data(MEMORY_FACTOR * args.n, M_MANY, args.data_dir, args.random_data, args.seed)
    results = {'command': ' '.join([os.path.basename(sys.executable), 'benchmarks/run.py'] +
                                   (sys.argv[1:] if argv is None else list(argv))),
               'settings': dict(vars(args), data=data[2], m_many=M_MANY,
                                memory_factor=MEMORY_FACTOR),
               'machine': machine_info(), 'models': {}}
    for name in args.models:
        results['models'][name] = benchmark_model(name, data, args)
    results['wall_s'] = time.perf_counter() - start
    if os.path.dirname(args.out):
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(results, f, indent=1)
    print(format_table(results))
    print('wall time {:.0f} s; JSON in {}'.format(results['wall_s'], args.out))
    return results


if __name__ == '__main__':
    main()
