"""What a score depends on, as hashes: the data, the loss function, the model's structure and values.

The on-disk cache (:mod:`chainer_influence.cache`) is keyed by these:

* :func:`hash_dataset`: every training example, exactly (the raw arrays of a tuple of arrays or a
  ``TupleDataset``; otherwise one pass over the examples, without any forward pass).
* :func:`describe_function`: a loss function's identity and code: module and qualified name,
  bytecode and constants (nested functions included), default arguments, closure values and the
  module globals the code reads. Functions of Chainer, NumPy, CuPy and SciPy are identified by
  name (their versions are part of the key); this library's by name, defaults and closure values.
  A value that cannot be identified (e.g. a lock or an open file in a closure) raises
  :class:`UnidentifiableError` naming it.
* :func:`describe_forward`: the model's structure: its links' classes and the sequence of functions
  (type, input shapes and dtypes, scalar settings such as a convolution's stride) that one forward
  pass of the loss on one example runs; relu -> tanh changes it, renaming a variable does not.
* :func:`hash_model_values`: every parameter (tracked or not) and persistent value (e.g.
  BatchNormalization's running statistics).
* :func:`score_settings`: the above for a model, loss and solver (with the library versions), the
  part of ``InfluenceFunctions``' cache key that does not depend on the training data.
"""
import functools
import hashlib
import json
import types

import numpy

import chainer

from chainer_influence._version import __version__
from chainer_influence.batches import CheckedDataset, iterate_batches
from chainer_influence.devices import to_host

LIBRARY_MODULES = ('chainer', 'numpy', 'cupy', 'scipy')
MAX_DEPTH = 8


class UnidentifiableError(TypeError):
    """A value the cache key cannot identify; the message names it."""


def hash_arrays(arrays, digest=None):
    """Update (or start) a sha1 digest with the dtype, shape and bytes of each array."""
    digest = digest or hashlib.sha1()
    for a in arrays:
        a = numpy.ascontiguousarray(to_host(a))
        digest.update(str((a.dtype.str, a.shape)).encode())
        digest.update(a.tobytes())
    return digest


def hash_json(value):
    """sha1 hex digest of ``value``'s JSON (keys sorted)."""
    return hashlib.sha1(json.dumps(value, sort_keys=True).encode()).hexdigest()


def raw_arrays(dataset):
    """The arrays behind a tuple of arrays or a ``TupleDataset`` of arrays, else None."""
    if isinstance(dataset, CheckedDataset):
        dataset = dataset.dataset
    if isinstance(dataset, chainer.datasets.TupleDataset):
        dataset = tuple(dataset._datasets)
    if isinstance(dataset, tuple) and all(
            isinstance(a, chainer.get_array_types()) for a in dataset):
        return dataset
    return None


def hash_dataset(dataset, batch_size=4096, begin=0, end=None):
    """sha1 hex digest of every example of ``dataset[begin:end]`` (order, dtypes, shapes and
    values).

    Raw arrays are hashed directly; any other dataset is read once in batches (a
    :class:`~chainer_influence.batches.CheckedDataset` checks its examples on the way).
    """
    arrays = raw_arrays(dataset)
    if arrays is not None:
        return hash_arrays([a[begin:end] for a in arrays], hashlib.sha1(b'arrays')).hexdigest()
    digest = hashlib.sha1(b'examples')
    for _, _, batch in iterate_batches(dataset, batch_size, start=begin, stop=end):
        hash_arrays(batch, digest)
    return digest.hexdigest()


def hash_model_values(model):
    """sha1 hex digest of all parameters and persistent values of ``model``, by name."""
    digest = hashlib.sha1()
    for name, p in sorted(model.namedparams()):
        digest.update(name.encode())
        hash_arrays([numpy.zeros(0) if p.array is None else p.array], digest)
    for path, link in sorted(model.namedlinks()):
        for name in sorted(link._persistent):
            digest.update('{}/{}'.format(path, name).encode())
            digest.update(json.dumps(describe(getattr(link, name), name)).encode())
    return digest.hexdigest()


def describe_function(fn):
    """A JSON-able description of a callable's identity and code (see the module docstring)."""
    return describe(fn, getattr(fn, '__qualname__', repr(fn)))


def describe(value, path, depth=0, active=None):
    """A JSON-able description of ``value``; ``path`` names it in error messages."""
    active = set() if active is None else active
    if depth > MAX_DEPTH:
        raise UnidentifiableError('{} is nested too deeply to identify'.format(path))
    if value is None or isinstance(value, (bool, int, float, str)):
        return [type(value).__name__, value if not isinstance(value, float) else repr(value)]
    if isinstance(value, bytes):
        return ['bytes', hashlib.sha1(value).hexdigest()]
    if isinstance(value, chainer.Variable):
        value = value.array
    if isinstance(value, chainer.get_array_types()) or isinstance(value, numpy.generic):
        return ['array', hash_arrays([value]).hexdigest()]
    if isinstance(value, numpy.dtype):
        return ['dtype', value.str]
    if isinstance(value, types.ModuleType):
        return ['module', value.__name__]
    if isinstance(value, type):
        return ['class', value.__module__, value.__qualname__]
    if isinstance(value, types.CodeType):
        return _describe_code(value, path, depth, active)
    if id(value) in active:
        return ['recursive', getattr(value, '__qualname__', type(value).__name__)]
    active.add(id(value))
    try:
        return _describe_object(value, path, depth + 1, active)
    finally:
        active.discard(id(value))


def _describe_object(value, path, depth, active):
    def sub(v, name):
        return describe(v, name, depth, active)

    if isinstance(value, (tuple, list)):
        return [type(value).__name__, [sub(v, '{}[{}]'.format(path, i))
                                       for i, v in enumerate(value)]]
    if isinstance(value, (set, frozenset)):
        return ['set', sorted(json.dumps(sub(v, path + ' element')) for v in value)]
    if isinstance(value, dict):
        return ['dict', sorted([repr(k), sub(v, '{}[{!r}]'.format(path, k))]
                               for k, v in value.items())]
    if isinstance(value, chainer.Link):
        return ['link', sub(type(value), path), hash_model_values(value)]
    if isinstance(value, types.FunctionType):
        return _describe_python_function(value, path, depth, active)
    if isinstance(value, types.MethodType):
        return ['method', sub(value.__self__, path + '.__self__'),
                sub(value.__func__, path + '.__func__')]
    if callable(value) and not hasattr(value, '__dict__'):  # builtins, ufuncs
        return ['builtin', getattr(value, '__module__', None) or type(value).__module__,
                getattr(value, '__qualname__', getattr(value, '__name__', repr(value)))]
    if isinstance(value, functools.partial):
        return ['partial', sub(value.func, path + '.func'), sub(value.args, path + '.args'),
                sub(value.keywords, path + '.keywords')]
    if hasattr(value, '__dict__'):  # a plain object (e.g. a callable class instance)
        return ['object', sub(type(value), path), sub(vars(value), path)]
    raise UnidentifiableError(
        '{} holds a {} object, which cannot be identified for the cache key'.format(
            path, type(value).__name__))


def _describe_python_function(fn, path, depth, active):
    module = fn.__module__ or ''
    name = '{}.{}'.format(module, fn.__qualname__)
    if module.split('.')[0] in LIBRARY_MODULES:
        return ['function', name]
    closure = {}
    for var, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        try:
            contents = cell.cell_contents
        except ValueError:  # an empty cell
            contents = None
        closure[var] = describe(contents, '{} (closure variable {!r} of {})'.format(
            path, var, fn.__qualname__), depth, active)
    out = {'name': name, 'closure': closure,
           'defaults': describe(fn.__defaults__, path + ' defaults', depth, active),
           'kwdefaults': describe(fn.__kwdefaults__, path + ' defaults', depth, active)}
    if module.split('.')[0] != 'chainer_influence':  # this library's code: its version says it
        out['code'] = _describe_code(fn.__code__, path, depth, active)
        out['globals'] = {
            g: describe(fn.__globals__[g], '{} (global {!r} read by {})'.format(
                path, g, fn.__qualname__), depth, active)
            for g in sorted(_global_names(fn.__code__)) if g in fn.__globals__}
    return ['function', out]


def _describe_code(code, path, depth, active):
    consts = [_describe_code(c, path, depth, active) if isinstance(c, types.CodeType)
              else describe(c, path + ' constant', depth, active) for c in code.co_consts]
    return ['code', hashlib.sha1(code.co_code).hexdigest(), list(code.co_names),
            code.co_argcount, code.co_kwonlyargcount, code.co_flags, consts]


def _global_names(code):
    names = set(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            names |= _global_names(c)
    return names


class _ForwardRecorder(chainer.FunctionHook):
    name = 'chainer_influence.fingerprints._ForwardRecorder'

    def __init__(self):
        self.calls = []

    def forward_preprocess(self, function, in_data):
        target = getattr(function, '_function', function)  # old-style Function adapters
        settings = {k: _simple(v) for k, v in sorted(vars(target).items())
                    if not k.startswith('_') and k not in ('rank', 'stack') and _simple(v) is not None}
        self.calls.append([type(target).__module__ + '.' + type(target).__name__,
                           [[a.dtype.str, list(a.shape)] for a in in_data], settings])


def _simple(value):
    """A scalar setting as a JSON-able value; None for anything else."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, numpy.generic):
        return value.item()
    if isinstance(value, tuple) and all(isinstance(v, (bool, int, float, str)) for v in value):
        return list(value)
    return None


def describe_forward(model, loss_fn, batch):
    """The model's structure: link classes and the functions one forward of the loss runs.

    ``batch``: a tuple of arrays holding one example (x, t, ...). Runs under ``train=False``
    without building a graph. Returns a JSON-able dict ``{'links': [...], 'functions': [...]}``.
    """
    recorder = _ForwardRecorder()
    with chainer.using_config('train', False), chainer.no_backprop_mode(), recorder:
        loss_fn(model, *batch)
    links = [[path, type(link).__module__ + '.' + type(link).__qualname__]
             for path, link in sorted(model.namedlinks())]
    return {'links': links, 'functions': recorder.calls}


def describe_solver(solver):
    """A solver's type and scalar settings (not its diagnostics), for the cache fingerprint."""
    settings = {k: v for k, v in sorted(vars(solver).items())
                if not k.startswith('_') and k != 'progress'
                and isinstance(v, (int, float, str, bool, type(None)))}
    return '{}.{}({})'.format(type(solver).__module__, type(solver).__name__, settings)


def score_settings(model, loss_fn, first, solver):
    """JSON-able fingerprint of the library versions, ``loss_fn``, ``model`` (structure and values)
    and ``solver``; ``first``: a tuple of arrays holding one training example (x, t, ...).

    Raises :class:`UnidentifiableError` when ``loss_fn`` cannot be identified.
    """
    structure = describe_forward(model, loss_fn, first)
    return {
        'versions': {'chainer_influence': __version__, 'chainer': chainer.__version__,
                     'numpy': numpy.__version__},
        'loss_fn': getattr(loss_fn, '__qualname__', repr(loss_fn)),
        'loss_fn_sha1': hash_json(describe_function(loss_fn)),
        'model_functions': [call[0].rsplit('.', 1)[-1] for call in structure['functions']],
        'model_structure_sha1': hash_json(structure),
        'model_values_sha1': hash_model_values(model),
        'solver': describe_solver(solver),
    }
