"""Scoring measurements: ``influence()`` given s_test against a training epoch and a naive loop.

* ``a``: one training epoch over the N examples (forward, backward, MomentumSGD update, batches of
  ``--batch-size`` drawn the way the scoring pass draws them): the floor;
* ``b1``, ``b100``: ``influence()`` for 1 and 100 test points given their s_test (no solve);
* ``c``: the naive loop (one batch-1 forward and backward per training example, flatten the
  gradient, dot with s_test) timed on ``--naive-n`` examples (``c_subset``) and extrapolated to N;
  ``naive_check`` compares its scores with ``influence()``'s;
* peak memory of ``influence()`` for one test point at N and 4N, each in a fresh process: the
  tracemalloc peak (numpy's allocations are traced) and the growth of the peak resident set;
* ``profile``: shares of a b1 call under cProfile (:func:`profile_fractions`) and the speed of the
  extra contraction work of b100 over b1, to compare with ``machine.sgemm_gflops``.

Times are minima over ``--repeats`` rounds after one warm-up round; a round calls each of a, b1,
b100 and c once, in turn, so that they meet the same load on a shared machine. s_test is random:
its values do not change the work done.
"""
import cProfile
import pstats
import tracemalloc

import numpy

import chainer
import chainer.functions as F
from chainer.datasets import TupleDataset
from chainer.functions.connection.convolution_2d import Convolution2DGradW
from chainer.functions.connection.linear import LinearGradWeight

import chainer_influence as ci
from chainer_influence.hooks import PerSampleGradientHook

from benchmarks.common import M_MANY, MODELS, best_times, in_fresh_process, train_epoch

MEMORY_FACTOR = 4     # memory is measured at N and MEMORY_FACTOR * N

ROWS = [  # (label, section, key, unit) of the table
    ('a: training epoch', 'times_s', 'a', 's'),
    ('b1: influence, 1 test point, s_test given', 'times_s', 'b1', 's'),
    ('b100: influence, 100 test points, s_test given', 'times_s', 'b100', 's'),
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


def scoring_times(model, train, x, t, tests, s_test, args):
    """``(times, profile, naive_check)`` of a, b1, b100 and c for ``model`` over ``train``.

    ``x``, ``t``: the training arrays (the naive loop runs on their first ``--naive-n`` rows);
    ``tests``: ``{1: test arrays, M_MANY: test arrays}``; ``s_test``: (M_MANY, P).
    """
    n, k = len(train), min(args.naive_n, len(train))
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
    profile['b100_extra_gflops_per_s'] = (2.0 * n * (M_MANY - 1) * s_test.shape[1] /
                                          (times['b100'] - times['b1']) / 1e9)
    naive = naive_scores(model, x[:k], t[:k], s_test[0])
    hooked = calc.influence(tests[1], s_test=s_test[:1])[0, :k]
    naive_check = {'examples': k, 'max_abs_diff': float(numpy.abs(naive - hooked).max()),
                   'max_abs_score': float(numpy.abs(naive).max())}
    return times, profile, naive_check


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


def measure_memory(name, space, x, t, test, s_test, args):
    """``{'n': ..., '4n': ...}``: :func:`memory_of_influence` for one test point, each in a fresh
    process."""
    params = [p.array for p in space.params]
    return {label: in_fresh_process(memory_of_influence, name, params, (x[:size], t[:size]),
                                    test, s_test[:1], args.batch_size)
            for label, size in (('n', args.n), ('4n', MEMORY_FACTOR * args.n))}
