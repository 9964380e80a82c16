"""Input validation: the one place where arguments, models and examples are checked.

Every check raises ``TypeError`` (wrong kind of value) or ``ValueError`` (right kind, bad value)
with a message that names the argument, the bad value and the fix. The functions are called where
inputs enter the library (constructors and first calls); training examples are checked while the
passes that read them stream (see :class:`ExampleChecker`), so no extra pass over the data is made.

Labels: a loss function with the attribute ``class_labels = True`` (as
:func:`~chainer_influence.losses.softmax_cross_entropy_loss` has) takes integer class indices as
the second element of each example; they must lie in ``[0, C)`` for a model with C outputs, or be
-1 (Chainer's ``ignore_label``: such an example has zero loss and zero influence). Other loss
functions' targets are only checked for NaN/inf.

Inputs (the first element of each example) must be floating point, unless the model contains an
``L.EmbedID`` link (token ids).
"""
import numbers

import numpy

import chainer
import chainer.links as L

from chainer_influence.parameters import unwrap_model

IGNORE_LABEL = -1
SUPPORTED_DTYPES = (numpy.float32, numpy.float64)


# ---- scalar arguments ----------------------------------------------------------------------
def check_positive_int(value, name):
    """``value`` as an int >= 1, e.g. ``batch_size``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and float(value).is_integer() and value >= 1:
            return int(value)
        raise TypeError('{} must be a positive integer, got {!r} ({})'.format(
            name, value, type(value).__name__))
    if value < 1:
        raise ValueError('{} must be a positive integer (>= 1), got {!r}'.format(name, value))
    return int(value)


def _real(value, name, what):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError('{} must be {}, got {!r} ({})'.format(
            name, what, value, type(value).__name__))
    return float(value)


def check_finite_positive(value, name):
    """``value`` as a finite float > 0, e.g. LiSSA's ``scale`` or CG's ``tol``."""
    v = _real(value, name, 'a finite positive number')
    if not (numpy.isfinite(v) and v > 0):
        raise ValueError('{} must be a finite positive number, got {!r}'.format(name, value))
    return v


def check_non_negative(value, name, allow_none=False):
    """``value`` as a finite float >= 0 (None passes through when ``allow_none``)."""
    if value is None and allow_none:
        return None
    v = _real(value, name, 'a finite number >= 0' + (' or None' if allow_none else ''))
    if not (numpy.isfinite(v) and v >= 0):
        raise ValueError('{} must be a finite number >= 0, got {!r}{}'.format(
            name, value, ' (or None for the default rule)' if allow_none else ''))
    return v


def check_damping(damping, allow_none=False):
    """``damping`` as a finite float >= 0; None (a default rule) only when ``allow_none``."""
    return check_non_negative(damping, 'damping', allow_none)


# ---- parameter names -----------------------------------------------------------------------
def check_params_argument(params):
    """``params`` as a list of str, or None (all parameters)."""
    if params is None:
        return None
    if isinstance(params, (str, bytes)):
        raise TypeError("params must be a list of names, e.g. ['/fc/W'], not the string {!r}: "
                        "write params=[{!r}]".format(params, params))
    try:
        names = list(params)
    except TypeError:
        raise TypeError("params must be a list of names, e.g. ['/fc/W'], got {!r}".format(params))
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise TypeError("params must be a list of names (str), e.g. ['/fc/W']; {!r} is not a "
                        "str".format(bad[0]))
    if not names:
        raise ValueError("params is empty: give at least one name, e.g. ['/fc/W'], or None for "
                         "all parameters")
    return names


def resolve_param_names(model, params):
    """Names relative to the unwrapped model (``L.Classifier`` -> its predictor), or None.

    A name not found as given loses a leading ``/predictor`` when ``model`` is an
    ``L.Classifier`` (``/predictor/fc/W`` -> ``/fc/W``). Unknown names raise ``ValueError``
    listing the model's names.
    """
    names = check_params_argument(params)
    if names is None:
        return None
    known = [n for n, _ in unwrap_model(model).namedparams()]
    resolved, unknown = [], []
    for name in names:
        if (name not in known and isinstance(model, L.Classifier)
                and name.startswith('/predictor/')):
            name = name[len('/predictor'):]
        (resolved if name in known else unknown).append(name)
    if unknown:
        raise ValueError('unknown parameter names {} in params; the model has {}'.format(
            unknown, known))
    return resolved


# ---- indices -------------------------------------------------------------------------------
def check_indices(indices, n, what):
    """``indices`` as a 1-D int64 numpy array of integers in [0, n)."""
    if isinstance(indices, range):
        indices = list(indices)
    if chainer.backend.get_array_module(indices) is not numpy:
        indices = chainer.backend.CpuDevice().send(indices)
    array = numpy.asarray(indices)
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim != 1:
        raise ValueError('{} must be a 1-D list of indices, got shape {}'.format(
            what, array.shape))
    if array.size and array.dtype.kind == 'b':
        raise TypeError('{} must be integer indices, got a boolean mask: use '
                        'numpy.flatnonzero(mask)'.format(what))
    if array.size and array.dtype.kind not in 'iu':
        raise TypeError('{} must be integer indices in [0, {}), got dtype {} ({!r}...)'.format(
            what, n, array.dtype, array[:3].tolist()))
    array = array.astype(numpy.int64)
    bad = numpy.flatnonzero((array < 0) | (array >= n))
    if bad.size:
        raise ValueError('{} must lie in [0, {}) (negative indices are not accepted); '
                         'position {} holds {}'.format(what, n, int(bad[0]), int(array[bad[0]])))
    return array


# ---- the model -----------------------------------------------------------------------------
def check_model(model, params=None):
    """Raise when ``model`` (or its tracked ``params``) cannot be differentiated reliably.

    Checks: the model has parameters, they are initialised, finite, and float32 or float64.
    """
    if not isinstance(model, chainer.Link):
        raise TypeError('model must be a chainer.Link (e.g. an L.Classifier), got {}'.format(
            type(model).__name__))
    named = list(unwrap_model(model).namedparams())
    if not named:
        raise ValueError('the model {} has no parameters: influence functions differentiate '
                         'with respect to parameters'.format(type(model).__name__))
    if params is not None:
        wanted = set(params)
        named = [(n, p) for n, p in named if n in wanted]
    lazy = [n for n, p in named if p.array is None]
    if lazy:
        raise ValueError('parameters {} are not initialised (lazy shapes): run one forward pass '
                         'on a training batch first, e.g. model(x[:1])'.format(lazy))
    for name, p in named:
        if p.dtype not in SUPPORTED_DTYPES:
            raise TypeError(
                'parameter {} has dtype {}: influence needs float32 or float64 (float16 has too '
                'little precision for Hessian-vector products). Compute influence on a float32 '
                'copy: m = copy.deepcopy(model); then for p in m.params(): '
                'p.array = p.array.astype(numpy.float32)'.format(name, p.dtype))
    dtypes = {p.dtype for _, p in named}
    if len(dtypes) > 1:
        raise TypeError('tracked parameters mix dtypes {}: cast the model to one dtype'.format(
            sorted(str(d) for d in dtypes)))
    for name, p in named:
        xp = chainer.backend.get_array_module(p.array)
        if not bool(xp.isfinite(p.array).all()):
            raise ValueError('parameter {} contains NaN or inf: the model diverged during '
                             'training; influence is undefined'.format(name))


def takes_integer_inputs(model):
    """True when the model contains an ``L.EmbedID`` link (its inputs are token ids)."""
    return any(isinstance(link, L.EmbedID) for link in unwrap_model(model).links())


def model_output_size(model, x_one):
    """C, the size of axis 1 of the model's output for one example (``x_one``: a batch of 1).

    One forward pass under ``train=False`` without backprop; 1 for a (B,) output.
    """
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        y = unwrap_model(model)(x_one)
    return int(y.shape[1]) if y.ndim >= 2 else 1


# ---- examples ------------------------------------------------------------------------------
def check_examples(batch, what, reference=None, n_outputs=None, first_index=0,
                   integer_inputs=False, indices=None):
    """Check a tuple of arrays (x, t, ...) of examples; raise naming the first bad example.

    Args:
        batch (tuple of arrays): inputs first; with ``n_outputs``, integer class labels second.
        what (str): 'training set', 'test set', ... for the messages.
        reference (list of tuple): the per-example shapes (``a.shape[1:]``) each column must have.
        n_outputs (int or None): C; labels must be in [0, C) or -1 (ignore_label). None: the
            second column is not a class label (only checked for NaN/inf when floating point).
        first_index (int): dataset index of the batch's first example (for the messages).
        integer_inputs (bool): accept integer inputs (token ids for ``L.EmbedID``).
        indices (array or None): dataset index of each example; overrides ``first_index``.
    """
    if not isinstance(batch, tuple) or not batch:
        raise TypeError('the {} must give tuples of arrays (x, t, ...), got {}'.format(
            what, type(batch).__name__))

    def index_of(position):
        return int(indices[position]) if indices is not None else first_index + int(position)

    if reference is not None:
        shapes = [tuple(a.shape[1:]) for a in batch]
        if shapes != [tuple(s) for s in reference]:
            raise ValueError('{} examples have shapes {} but training examples have {}: give '
                             'examples of the same form (x, t, ...)'.format(
                                 what, shapes, [tuple(s) for s in reference]))
    x = batch[0]
    kind = x.dtype.kind
    if kind in 'iub' and not integer_inputs:
        raise TypeError('{} inputs have dtype {}: the model needs floating point inputs; cast '
                        'them, e.g. x.astype(numpy.float32) (integer inputs are accepted only '
                        'for models with an L.EmbedID link)'.format(what, x.dtype))
    if kind not in 'iubf':
        raise TypeError('{} inputs have dtype {}: expected a numeric array'.format(what, x.dtype))
    if n_outputs is not None:
        if len(batch) < 2:
            raise ValueError('the {} examples have no labels: give (x, t) tuples'.format(what))
        t = batch[1]
        if t.dtype.kind not in 'iu':
            raise TypeError('{} labels have dtype {}: class labels must be integers; cast them '
                            'with t.astype(numpy.int32)'.format(what, t.dtype))
        xp = chainer.backend.get_array_module(t)
        bad = ((t < 0) & (t != IGNORE_LABEL)) | (t >= n_outputs)
        if bool(bad.any()):
            position = int(xp.flatnonzero(bad.reshape(len(t), -1).any(axis=1))[0])
            raise ValueError(
                '{} example {} has label {}, outside the model\'s {} outputs: labels must be '
                'class indices in [0, {}) (or {} to ignore an example); check the labels or the '
                'model\'s output size'.format(
                    what, index_of(position), _short(t[position]), n_outputs, n_outputs,
                    IGNORE_LABEL))
    for column, a in enumerate(batch):
        if a.dtype.kind != 'f':
            continue
        xp = chainer.backend.get_array_module(a)
        finite = xp.isfinite(a).reshape(len(a), -1).all(axis=1)
        if not bool(finite.all()):
            position = int(xp.flatnonzero(~finite)[0])
            raise ValueError('{} example {} has NaN or inf in its {}: fix or drop that '
                             'example'.format(what, index_of(position),
                                              'input' if column == 0 else 'element ' + str(column)))


def _short(value):
    value = chainer.backend.CpuDevice().send(value)
    return value.tolist() if numpy.ndim(value) else int(value)


class ExampleChecker(object):
    """Checks each training example once, inside the batches that the passes already read.

    Call it as ``checker(batch, indices)`` for every batch read from the training set (see
    :class:`~chainer_influence.batches.CheckedDataset`); examples already checked are skipped,
    and after every example was seen once the call is free.
    """

    def __init__(self, n, what='training set', **options):
        self.what = what
        self.options = options
        self.checked = numpy.zeros(n, dtype=bool)
        self.done = False

    def __call__(self, batch, indices):
        if self.done:
            return
        indices = numpy.asarray(indices)
        if self.checked[indices].all():
            return
        check_examples(batch, self.what, indices=indices, **self.options)
        self.checked[indices] = True
        self.done = bool(self.checked.all())


def check_finite(array, what):
    """Raise ``FloatingPointError`` naming ``what`` unless every value of ``array`` is finite."""
    xp = chainer.backend.get_array_module(array)
    if not bool(xp.isfinite(array).all()):
        raise FloatingPointError(
            'non-finite values in {}: check the model for NaN/inf parameters or losses, or add '
            'damping'.format(what))


def check_solver(solver):
    """``solver``: an instance with ``solve(curvature, V, damping)``, e.g. ``ci.CGSolver()``."""
    if isinstance(solver, type):
        raise TypeError('solver must be a solver instance, got the class {0}: write '
                        'solver={0}()'.format(solver.__name__))
    if not callable(getattr(solver, 'solve', None)):
        raise TypeError('solver must have a solve(curvature, V, damping) method, e.g. '
                        'ci.CGSolver(); got {!r}'.format(solver))
    return solver
