"""``InfluenceExtension``: influence rankings next to the training log."""
import os
import time
import warnings

import numpy

import chainer
from chainer import reporter
from chainer.training import extension

from chainer_influence import checks
from chainer_influence import report_files
from chainer_influence import reporting
from chainer_influence.batches import as_tuples, dataset_length, get_batch, iterate_batches
from chainer_influence.cache import CacheKeyChangedWarning
from chainer_influence.devices import to_host
from chainer_influence.distributed import Shard, communicator_of
from chainer_influence.end_of_training import EndOfTrainingTrigger, training_length
from chainer_influence.files import check_writable
from chainer_influence.influence import InfluenceFunctions, check_normalize
from chainer_influence.losses import sigmoid_cross_entropy_loss, softmax_cross_entropy_loss
from chainer_influence.parameters import unwrap_model
from chainer_influence.training_setup import (check_twice_differentiable, trained_loss,
                                              weight_decay_of)

ON_ERROR = ('warn', 'raise')


class InfluenceRunWarning(UserWarning):
    """The influence run (or one of its writers) failed; training went on. See error.json."""


class InfluenceWriteError(RuntimeError):
    """With ``on_error='raise'``: writers or figures failed (after every one was tried)."""


class InfluenceExtension(extension.Extension):
    """Trainer extension that ranks the training examples by influence on chosen test points.

    By default it runs once, at the end of training (the iteration where the trainer's stop
    trigger ends it; also after resuming with a longer stop trigger); pass ``trigger=`` to
    ``trainer.extend`` to run it more often (e.g. ``(1, 'epoch')``, to watch influence evolve).

    **Before training** (``initialize``) it checks everything it can and raises with a message that
    says what to change: the parameter names (with or without the Classifier's ``/predictor``),
    ``test_indices``, the shapes and dtypes of both datasets, the labels against the model's
    output size, ``class_names``, that the output folder is writable, whether the inputs can be
    drawn as images (else score-bar figures are drawn), the loss the model is trained on and the
    weight decay of its optimizer (a warning names any regulariser that is not an L2 term).

    Each run

    * takes the model from the updater's ``main`` optimizer (an ``L.Classifier`` or a plain Link),
      the device from the updater, the loss from ``L.Classifier.lossfun`` (see
      :func:`~chainer_influence.training_setup.trained_loss`) and the weight decay from the
      optimizer (see :func:`~chainer_influence.training_setup.weight_decay_of`);
    * computes I_up,loss of every training example on each test point (negative = helpful,
      positive = harmful) and, with ``self_influence=True``, the self-influence of each example;
    * reports ``<out>/failed`` (0 or 1), ``<out>/time``, ``<out>/n_test``, ``<out>/n_train`` and
      numeric solver diagnostics (``<out>/solver/...``) through ``chainer.reporter``, so
      ``LogReport`` and ``PrintReport`` show them (``out`` is ``influence`` by default);
    * writes ``rankings.json``, ``rankings.csv``, ``influence.npz`` (and ``self_influence.csv``)
      (see :mod:`chainer_influence.reporting`) and the figures ``top_influential.png`` (and
      ``self_influence.png``, ``top_self_influence.png``) under ``trainer.out/<out>/``, next to
      ``log``. Runs on another trigger also keep a copy under ``<out>/iteration_<n>/``.

    **Failures never cost the training run** with ``on_error='warn'`` (the default): an exception
    in the influence run, or in any writer or figure, is caught; training goes on and finishes with
    its log entries and snapshots. The failure is reported as ``<out>/failed`` = 1 in the log, as a
    warning, and in ``<out>/error.json`` with the traceback. Writers and figures fail independently
    of each other. With ``on_error='raise'`` the exception propagates out of ``trainer.run()`` after
    ``error.json`` is written, as any extension's does; the extension runs before ``LogReport`` and
    snapshots (it reports to the log), so the log entry and snapshot of that iteration are then
    not written. A failing writer raises :class:`InfluenceWriteError` after all writers ran.

    **With several processes** (ChainerMN: ``create_multi_node_optimizer``, ``scatter_dataset``)
    it takes the communicator from the multi-node optimizer (or ``comm=``). Every rank must run it
    (it runs on the trainer's trigger on every rank); ``train`` is the FULL training set on every
    rank, in the order the rankings' indices refer to (not the rank's ``scatter_dataset`` part,
    which only feeds the updater); each rank checks and scores only its contiguous shard of it.
    Only rank 0 writes rankings, figures and ``error.json``; every rank reports the scalars. A
    failure that only some ranks meet (e.g. a bad example in one shard) cannot be skipped, since
    the others wait in a collective: use ``chainermn.global_except_hook.add_hook()`` so that it
    stops every process.

    Training is not disturbed: everything runs under ``chainer.using_config('train', False)`` with
    ``chainer.grad``, so the parameters and their ``.grad`` are unchanged afterwards.

    Args:
        train, test: Chainer datasets of tuples (x, t), or of dicts (``DictDataset``, see
            ``keys``); ``train`` is the training set the model was trained on, in the same order.
        test_indices (list of int): test points to explain; None: the first ``min(10, len)``.
        top_k (int): helpful and harmful training examples kept per test point.
        solver: an ``ExactSolver``, ``CGSolver``, ``LiSSASolver``, ``KFACSolver`` or
            ``EKFACSolver``; None chooses (see ``InfluenceFunctions``): Exact on the Hessian for
            small convex models, EK-FAC on the Gauss-Newton otherwise.
        loss_fn: ``loss_fn(model, x, t)`` -> per-example losses; None reads the trained loss.
        params (list of str): parameter names to restrict to (e.g. the last layer), as
            ``model.predictor.namedparams()`` or the optimizer's target names them.
        damping (float or None): solves use H + damping I; None: the solver's default rule.
        curvature (str or None): ``'hessian'``, ``'gauss-newton'`` or None (see
            ``InfluenceFunctions``). The choice made is recorded under ``solver_choice`` in the
            settings of ``rankings.json``.
        weight_decay (float, dict or None): None reads it from the optimizer.
        out (str): output folder under ``trainer.out``, and the prefix of the reported keys.
        writers (list): callables ``writer(report, out_dir)``; None: JSON, CSV and NPZ.
        plot (bool): write the figures.
        self_influence (bool): also compute self-influence for every training example.
        class_names (list of str): label names for JSON and figures (one per model output).
        batch_size (int): examples per pass over the training set.
        cache (bool): cache s_test and scores under ``<out>/cache`` (keyed by everything a score
            depends on; the latest 3 results kept) so that an interrupted run resumes.
        progress (bool): progress display on a terminal; False silences every phase.
        on_error (str): ``'warn'`` or ``'raise'`` (see above).
        value_range (tuple): (low, high) of the image inputs for the figures; None detects it.
        keys (tuple of str): for datasets of dicts, the keys giving (inputs..., label); None:
            the Classifier's ``label_key`` last, the other keys before it in their order.
        normalize: None, or ``'relatif'`` to rank by RelatIF (Barshan et al. 2020): each training
            example's influence divided by the square root of its self-influence; see
            :meth:`InfluenceFunctions.influence` for the cost.
        comm: a ChainerMN communicator; None takes the multi-node optimizer's, if any.
    """

    trigger = None  # replaced by an EndOfTrainingTrigger per extension
    priority = extension.PRIORITY_WRITER  # report before LogReport reads the observation
    name = 'InfluenceExtension'
    uses_curvature = True  # initialize checks double backprop and reads the weight decay
    shards_training_set = True  # with a communicator, each rank takes its shard (see above)

    def __init__(self, train, test, test_indices=None, top_k=10, solver=None, loss_fn=None,
                 params=None, damping=None, weight_decay=None, out='influence', writers=None,
                 plot=True, self_influence=False, class_names=None, batch_size=256, cache=True,
                 progress=True, on_error='warn', value_range=None, keys=None, curvature=None,
                 normalize=None, comm=None):
        check_normalize(normalize)
        if on_error not in ON_ERROR:
            raise ValueError('on_error must be one of {}, got {!r}'.format(ON_ERROR, on_error))
        self.train, self.test = train, test
        self.test_indices = test_indices
        self.top_k = checks.check_positive_int(top_k, 'top_k')
        self.solver = solver
        self.loss_fn = loss_fn
        self.params = checks.check_params_argument(params)
        self.damping = checks.check_damping(damping, allow_none=True)
        self.curvature = curvature
        self.weight_decay = weight_decay
        self.out = out
        self.writers = reporting.DEFAULT_WRITERS if writers is None else writers
        self.plot = plot
        self.compute_self_influence = self_influence
        self.class_names = class_names
        self.batch_size = checks.check_positive_int(batch_size, 'batch_size')
        self.cache = cache
        self.progress = progress
        self.error_policy = on_error  # not self.on_error: Extension.on_error is a method
        self.value_range = value_range
        self.keys = keys
        self.normalize = normalize
        self.comm = comm
        self.trigger = EndOfTrainingTrigger()
        self.report = None  # the last InfluenceReport
        self.failures = []  # failure records of the last run (see report_files.failure)
        self._setup = None

    # ---- before training -----------------------------------------------------------------
    def initialize(self, trainer):
        """Check every input against the trainer's model (see the class docstring)."""
        optimizer = trainer.updater.get_optimizer('main')
        model = optimizer.target
        checks.check_model(model)
        params = checks.resolve_param_names(model, self.params)
        checks.check_model(model, params)
        label_key = getattr(model, 'label_key', None)
        label_key = label_key if isinstance(label_key, str) else None
        train = as_tuples(self.train, self.keys, label_key)
        test = as_tuples(self.test, self.keys, label_key)
        n_train = dataset_length(train, 'training set')
        n_test = dataset_length(test, 'test set')
        comm = self.comm if self.comm is not None else communicator_of(optimizer)
        shard = Shard(n_train, comm if self.shards_training_set else None)
        test_indices = (numpy.arange(min(10, n_test)) if self.test_indices is None else
                        checks.check_indices(self.test_indices, n_test, 'test_indices'))
        sample = get_batch(train, range(min(4, n_train)))
        loss_fn = self.loss_fn or trained_loss(model, trainer.updater, sample)
        n_outputs = checks.model_output_size(model, sample[0][:1])
        self._check_loss_shape(model, loss_fn, sample)
        if self.uses_curvature:
            check_twice_differentiable(model, loss_fn, sample, params)
        labels = _label_kind(loss_fn)
        train_shapes = [a.shape[1:] for a in sample]
        train_labels = self._check_training_set(train, shard, labels, n_outputs, model)
        test_batch = get_batch(test, test_indices)
        self._check_examples(test_batch, 'test set', labels, n_outputs, model, train_shapes,
                             indices=test_indices)
        self._check_class_names(labels, n_outputs)
        if shard.is_writer:
            check_writable(os.path.join(trainer.out, self.out))
        images = self.plot and _images_drawable(sample[0][0])
        if self.plot and not images:
            warnings.warn('the inputs of shape {} cannot be drawn as images: the figures show '
                          'score bars instead'.format(sample[0].shape[1:]))
        self._warn_if_never_runs(trainer)
        if self.uses_curvature:
            self._read_weight_decay(optimizer, params, warn=True)  # warns of ignored terms now
        self._setup = {
            'model': model, 'optimizer': optimizer, 'params': params, 'train': train,
            'test': test, 'test_indices': test_indices, 'loss_fn': loss_fn, 'labels': labels,
            'train_labels': train_labels, 'images': images, 'shard': shard,
        }

    def _check_loss_shape(self, model, loss_fn, sample):
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            losses = loss_fn(model, *sample)
        if losses.shape != (len(sample[0]),):
            raise ValueError(
                'loss_fn must return per-example losses of shape (B,) = ({},), got {}: reduce '
                'every axis but the batch axis (reduce=\'no\', then a sum or mean over the '
                'others)'.format(len(sample[0]), losses.shape))

    def _check_training_set(self, train, shard, labels, n_outputs, model):
        """Check every training example of this rank's shard in chunks; returns the labels of
        all N for the report (on rank 0; None on the others)."""
        parts = []
        for begin, _, batch in iterate_batches(train, 4096, start=shard.begin, stop=shard.end):
            self._check_examples(batch, 'training set', labels, n_outputs, model, None,
                                 first_index=begin)
            parts.append(_report_labels(batch))
        return shard.gather_concat(numpy.concatenate(parts))

    def _check_examples(self, batch, what, labels, n_outputs, model, reference, **where):
        checks.check_examples(batch, what, reference=reference,
                              n_outputs=n_outputs if labels == 'classes' else None,
                              integer_inputs=checks.takes_integer_inputs(model), **where)
        if labels == 'binary':
            _check_binary_labels(batch, what, n_outputs)

    def _check_class_names(self, labels, n_outputs):
        if self.class_names is None:
            return
        needed = 2 if labels == 'binary' and n_outputs == 1 else n_outputs
        if len(self.class_names) < needed:
            raise ValueError('class_names has {} names but the model has {} classes: give one '
                             'name per class'.format(len(self.class_names), needed))

    def _read_weight_decay(self, optimizer, params, warn=False):
        if self.weight_decay is not None:
            return self.weight_decay
        rate, ignored = weight_decay_of(optimizer, params)
        if warn and ignored:
            warnings.warn(
                'InfluenceExtension ignores {}: it is not an L2 term of the training objective. '
                'Pass weight_decay= (and damping=) to account for it yourself.'.format(
                    '; '.join(ignored)))
        return rate

    def _warn_if_never_runs(self, trainer):
        entries = getattr(trainer, '_extensions', {}).values()
        default = any(e.extension is self and e.trigger is self.trigger for e in entries)
        if default and training_length(trainer.stop_trigger) is None:
            warnings.warn('InfluenceExtension will not run: the trainer\'s stop trigger {} has no '
                          'length known in advance, so the end of training is unknown. Pass '
                          'trigger=... to trainer.extend'.format(
                              type(trainer.stop_trigger).__name__))

    # ---- the run -------------------------------------------------------------------------
    def __call__(self, trainer):
        if self._setup is None:
            self.initialize(trainer)
        start = time.time()
        out_dir = os.path.join(trainer.out, self.out)
        self.failures = []
        try:
            with warnings.catch_warnings():
                # the cache holds this extension's earlier runs, made with other parameter values
                warnings.simplefilter('ignore', CacheKeyChangedWarning)
                values = self._compute(trainer)
        except Exception as e:
            self.failures.append(report_files.failure('influence run', e))
            self._finish(trainer, out_dir, {self.out + '/failed': 1.0})
            if self.error_policy == 'raise':
                raise
            return
        dirs = [out_dir] if self._setup['shard'].is_writer else []  # rank 0 writes
        if dirs and self._keeps_history(trainer):  # a user's trigger: keep a copy
            dirs.append(os.path.join(out_dir, 'iteration_{}'.format(trainer.updater.iteration)))
        for directory in dirs:
            self.failures += report_files.write_all(self.report, directory, self._outputs())[1]
        values = self._values(values, time.time() - start)
        self._finish(trainer, out_dir, values)
        if self.failures and self.error_policy == 'raise':
            raise InfluenceWriteError('writers failed: {}'.format(
                report_files.summary(self.failures)))

    def _compute(self, trainer):
        """The influence run: computes ``self.report``; returns the values to report under
        ``<out>/`` besides time and sizes (here the solver's diagnostics)."""
        s = self._setup
        self.report = None
        weight_decay = self._read_weight_decay(s['optimizer'], s['params'])
        # one cache folder: its keys cover the parameter values, and old results are pruned there
        cache_dir = os.path.join(trainer.out, self.out, 'cache')
        calc = InfluenceFunctions(
            s['model'], s['train'], loss_fn=s['loss_fn'], solver=self.solver,
            weight_decay=weight_decay, damping=self.damping, params=s['params'],
            batch_size=self.batch_size, device=getattr(trainer.updater, 'device', None),
            cache_dir=cache_dir if self.cache else None, progress=self.progress,
            curvature=self.curvature, comm=s['shard'].comm)
        test_batch = get_batch(s['test'], s['test_indices'], calc.device)
        scores = calc.influence(test_batch, normalize=self.normalize)
        self_influence = calc.self_influence() if self.compute_self_influence else None
        if s['shard'].is_writer:  # the scores were gathered there; other ranks hold None
            self.report = self._make_report(test_batch, scores, self_influence,
                                            self._settings(trainer, calc, weight_decay))
        return _solver_values(calc.solver)

    def _keeps_history(self, trainer):
        """Whether this run also keeps a copy under ``<out>/iteration_<n>/``."""
        return self.trigger.last_fired != trainer.updater.iteration

    def _make_report(self, test_batch, scores, self_influence, settings):
        """The InfluenceReport of ``scores`` (M, N) with the test points' labels, predictions
        and losses."""
        s = self._setup
        predicted, losses = self._predict(s['model'], s['loss_fn'], test_batch)
        return reporting.InfluenceReport(
            scores, s['test_indices'], _report_labels(test_batch), s['train_labels'],
            predicted_labels=predicted, test_losses=losses, self_influence=self_influence,
            top_k=self.top_k, class_names=self.class_names, settings=settings)

    def _finish(self, trainer, out_dir, values):
        """Report ``values`` (and ``failed``); on failures, warn and write error.json."""
        values.setdefault(self.out + '/failed', 0.0)
        reporter.report(values)
        if not self._setup['shard'].is_writer:
            return
        if not self.failures:
            report_files.remove_error(out_dir)  # from an earlier run; this one succeeded
            return
        updater = trainer.updater
        try:
            path = report_files.write_error(out_dir, self.failures, updater.iteration,
                                            updater.epoch_detail)
        except Exception as e:
            path = 'nowhere ({}: {})'.format(type(e).__name__, e)
        if self.error_policy == 'warn':
            warnings.warn('InfluenceExtension failed at iteration {} ({}); training goes on. '
                          'Details in {}'.format(updater.iteration,
                                                 report_files.summary(self.failures), path),
                          InfluenceRunWarning)

    def finalize(self):
        pass

    # ---- internals -----------------------------------------------------------------------
    def _outputs(self):
        """The writers, then the figures, each a callable ``(report, out_dir)``."""
        outputs = list(self.writers)
        if self.plot:
            outputs += self._figures()
        return outputs

    def _figures(self):
        from chainer_influence import plots
        s = self._setup
        images = s['images']

        def top_influential(report, out_dir):
            path = os.path.join(out_dir, 'top_influential.png')
            if images:
                return plots.plot_top_influential(report, s['test'], s['train'], path,
                                                  value_range=self.value_range)
            return plots.plot_top_scores(report, path)

        def self_influence(report, out_dir):
            if report.self_influence is None:
                return None
            return plots.plot_self_influence(report.self_influence,
                                             os.path.join(out_dir, 'self_influence.png'))

        def top_self_influence(report, out_dir):
            if report.self_influence is None:
                return None
            return plots.plot_top_self_influence(
                report, s['train'], os.path.join(out_dir, 'top_self_influence.png'),
                value_range=self.value_range, images=images)

        return [top_influential, self_influence, top_self_influence]

    def _predict(self, model, loss_fn, batch):
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            outputs = unwrap_model(model)(*batch[:-1])
            losses = loss_fn(model, *batch)
        y = outputs.array.reshape(len(outputs), -1)
        kind = _label_kind(loss_fn)
        if kind == 'classes':
            predicted = y.argmax(axis=1)
        elif kind == 'binary' and y.shape[1] == 1:
            predicted = (y[:, 0] > 0).astype(numpy.int64)
        else:
            predicted = None
        return (None if predicted is None else to_host(predicted)), to_host(losses.array)

    def _settings(self, trainer, calc, weight_decay):
        return {'method': 'influence functions', 'normalize': self.normalize,
                'solver': type(calc.solver).__name__, 'damping': calc.damping,
                'curvature': calc.solver_choice['curvature'],
                'solver_choice': calc.solver_choice, 'weight_decay': weight_decay,
                'params': calc.param_names,
                'n_params': calc.space.size, 'n_train': calc.n_train,
                'iteration': trainer.updater.iteration, 'epoch': trainer.updater.epoch,
                'top_k': self.top_k,
                'loss_fn': getattr(self._setup['loss_fn'], '__name__', None)}

    def _values(self, values, seconds):
        """``values`` from :meth:`_compute` with time and sizes, under ``<out>/``."""
        values = dict(values, time=seconds, n_test=len(self._setup['test_indices']),
                      n_train=self._setup['shard'].n)  # every rank; the report is on rank 0
        return {self.out + '/' + key: value for key, value in values.items()}


def _solver_values(solver):
    """The numeric diagnostics of a solver, as ``solver/<key>`` scalars for the reporter."""
    values = {}
    for key, value in getattr(solver, 'diagnostics', {}).items():
        value = numpy.asarray(value)
        if value.dtype.kind in 'biuf' and value.size >= 1:
            # per-column diagnostics are summarised by their worst (largest) value
            values['solver/' + key] = float(value.max() if value.ndim else value)
    return values


def _label_kind(loss_fn):
    """'classes' (integer class indices), 'binary' (0/1 per output) or None (other targets)."""
    base = getattr(loss_fn, 'base', loss_fn)  # a ScaledLoss
    if base is softmax_cross_entropy_loss or getattr(base, 'class_labels', False):
        return 'classes'
    if base is sigmoid_cross_entropy_loss:
        return 'binary'
    return None


def _check_binary_labels(batch, what, n_outputs):
    """Sigmoid cross-entropy: integer labels in {0, 1} (-1: ignored), one per model output."""
    if len(batch) < 2:
        raise ValueError('the {} examples have no labels: give (x, t) tuples'.format(what))
    t = to_host(batch[1])
    if t.dtype.kind not in 'iu':
        raise TypeError('{} labels have dtype {}: sigmoid cross-entropy needs integer labels 0 or '
                        '1; cast them with t.astype(numpy.int32)'.format(what, t.dtype))
    if t.reshape(len(t), -1).shape[1] != n_outputs:
        raise ValueError('{} labels have shape {} per example but the model has {} outputs: '
                         'sigmoid cross-entropy needs one 0/1 label per output (e.g. t of shape '
                         '(N, 1) for a binary classifier)'.format(what, t.shape[1:], n_outputs))
    bad = numpy.flatnonzero(~numpy.isin(t.reshape(len(t), -1), (-1, 0, 1)).all(axis=1))
    if bad.size:
        raise ValueError('{} example {} has label {}: sigmoid cross-entropy needs labels 0 or 1 '
                         '(-1 to ignore)'.format(what, int(bad[0]), t[bad[0]].tolist()))


def _report_labels(batch):
    """One integer label per example (N,) for the report: the last element when it holds one
    integer per example, else -1 (e.g. regression targets)."""
    t = to_host(batch[-1]) if len(batch) > 1 else None
    if t is None or t.dtype.kind not in 'iu' or t.reshape(len(t), -1).shape[1] != 1:
        return numpy.full(len(batch[0]), -1, dtype=numpy.int64)
    return t.reshape(len(t)).astype(numpy.int64)


def _images_drawable(x):
    from chainer_influence import plots
    return plots.can_show_as_image(x)

