"""What every benchmark shares: the models, the data, timing, machine information, the table.

Not a script: ``benchmarks/run.py`` runs the measurements of ``scoring.py`` and ``solvers.py``
with these.
"""
import multiprocessing
import os
import platform
import time

import numpy

import chainer
import chainer.functions as F
import chainer.links as L
from chainer.dataset import concat_examples

import chainer_influence as ci
from chainer_influence.batches import iterate_batches

M_MANY = 100          # test points in the b100 timings


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


def in_fresh_process(fn, *args):
    """``fn(*args)`` in a newly spawned Python process (nothing inherited but the arguments)."""
    with multiprocessing.get_context('spawn').Pool(1) as pool:
        return pool.apply(fn, args)


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


def _cell(section, key, unit, extrapolated):
    """One table cell: ``section[key]`` (``key`` a tuple: nested) formatted in ``unit``."""
    value = section
    for part in key if isinstance(key, tuple) else (key,):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return 'n/a'
    text = {'s': '{:.3g} s', 'x': '{:.3g}x', '%': '{:+.1%}', 'share': '{:.0%}',
            'MiB': '{:.1f} MiB', 'bytes': '{:,.0f} B'}[unit].format(value)
    return text + (' (extrapolated)' if key in extrapolated else '')


def format_table(results, rows, notes=()):
    """The results as a Markdown table: one row a measurement, one column a model.

    ``rows``: ``(label, section, key, unit)`` tuples, the cell being ``model[section][key]``;
    ``notes``: lines printed under the table.
    """
    models = results['models']
    header = ['N = {}'.format(results['settings']['n'])] + [
        '{} (P = {:,})'.format(name, models[name]['n_params']) for name in models]
    lines = ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
    for label, section, key, unit in rows:
        cells = [_cell(models[name].get(section, {}), key, unit, models[name]['extrapolated'])
                 for name in models]
        lines.append('| ' + ' | '.join([label] + cells) + ' |')
    return '\n'.join(lines + [''] + list(notes))
