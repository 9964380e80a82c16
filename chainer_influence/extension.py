"""``InfluenceExtension``: influence rankings next to the training log."""
import os
import time
import warnings

import numpy

import chainer
from chainer import optimizer_hooks
from chainer import reporter
from chainer.training import extension

from chainer_influence import reporting
from chainer_influence.batches import dataset_length, get_batch
from chainer_influence.influence import InfluenceFunctions
from chainer_influence.losses import softmax_cross_entropy_loss
from chainer_influence.parameters import unwrap_model


class EndOfTraining(object):
    """Trigger that fires once, at the iteration where the trainer's stop trigger ends training.

    It reads the stop trigger's ``period`` and ``unit`` (as ``stop_trigger=(20, 'epoch')`` makes);
    for other stop triggers it never fires, and the extension warns at the end of training.
    """

    def __init__(self):
        self.fired = False
        self.no_period = False

    def __call__(self, trainer):
        stop = trainer.stop_trigger
        period, unit = getattr(stop, 'period', None), getattr(stop, 'unit', None)
        self.no_period = period is None
        if self.fired or self.no_period:
            return False
        updater = trainer.updater
        now = updater.epoch_detail if unit == 'epoch' else updater.iteration
        self.fired = now >= period
        return self.fired

    def serialize(self, serializer):
        self.fired = serializer('fired', self.fired)


def weight_decay_of(optimizer):
    """The summed rate of the ``WeightDecay`` hooks of an optimizer (0.0 when none)."""
    hookable = optimizer._hookable  # Chainer 7 keeps optimizer hooks there
    hooks = list(hookable._pre_update_hooks.values()) + list(hookable._post_update_hooks.values())
    return float(sum(h.rate for h in hooks if isinstance(h, optimizer_hooks.WeightDecay)))


class InfluenceExtension(extension.Extension):
    """Trainer extension that ranks the training examples by influence on chosen test points.

    By default it runs once, at the end of training; pass ``trigger=`` to ``trainer.extend`` to run
    it more often (e.g. ``(1, 'epoch')``, to watch influence evolve). Each run

    * takes the model from the updater's ``main`` optimizer (an ``L.Classifier`` or a plain Link),
      the device from the updater, and ``weight_decay`` from a ``WeightDecay`` optimizer hook;
    * computes I_up,loss of every training example on each test point (negative = helpful,
      positive = harmful) and, with ``self_influence=True``, the self-influence of each example;
    * reports ``<out>/time``, ``<out>/n_test``, ``<out>/n_train`` and numeric solver
      diagnostics (``<out>/solver/...``) through ``chainer.reporter``, so ``LogReport`` and
      ``PrintReport`` show them (``out`` is ``influence`` by default; two extensions with
      different ``out`` keep apart in the log);
    * writes ``rankings.json``, ``rankings.csv`` and ``influence.npz`` (see
      :mod:`chainer_influence.reporting`) and the figures ``top_influential.png`` (and
      ``self_influence.png``) under ``trainer.out/<out>/``, next to ``log``. Runs on another
      trigger also keep a copy under ``<out>/iteration_<n>/``.

    Training is not disturbed: everything runs under ``chainer.using_config('train', False)`` with
    ``chainer.grad``, so the parameters and their ``.grad`` are unchanged afterwards.

    Args:
        train, test: Chainer datasets of tuples (x, t); ``train`` is the training set the model
            was trained on, in the same order.
        test_indices (list of int): test points to explain; None: the first ``min(10, len)``.
        top_k (int): helpful and harmful training examples kept per test point.
        solver: an ``ExactSolver``, ``CGSolver`` or ``LiSSASolver``; None picks one by size.
        loss_fn: ``loss_fn(model, x, t)`` -> per-example losses; default softmax cross-entropy.
        params (list of str): parameter names to restrict to (e.g. the last layer).
        damping (float): solves use H + damping I.
        weight_decay (float or None): None reads it from the optimizer's ``WeightDecay`` hook.
        out (str): output folder under ``trainer.out``, and the prefix of the reported keys.
        writers (list): callables ``writer(report, out_dir)``; None: JSON, CSV and NPZ.
        plot (bool): write the figures.
        self_influence (bool): also compute self-influence for every training example.
        class_names (list of str): label names for JSON and figures.
        batch_size (int): examples per pass over the training set.
        cache (bool): cache s_test and scores under ``<out>/cache/iteration_<n>`` so that an
            interrupted run resumes.
        progress (bool): progress bars on a terminal.
    """

    trigger = None  # replaced by an EndOfTraining instance per extension
    priority = extension.PRIORITY_WRITER  # report before LogReport reads the observation
    name = 'InfluenceExtension'

    def __init__(self, train, test, test_indices=None, top_k=10, solver=None, loss_fn=None,
                 params=None, damping=0.0, weight_decay=None, out='influence', writers=None,
                 plot=True, self_influence=False, class_names=None, batch_size=256, cache=True,
                 progress=True):
        dataset_length(train, 'training set')
        n_test = dataset_length(test, 'test set')
        self.train, self.test = train, test
        self.test_indices = list(range(min(10, n_test)) if test_indices is None
                                 else test_indices)
        self.top_k = top_k
        self.solver = solver
        self.loss_fn = loss_fn or softmax_cross_entropy_loss
        self.params = params
        self.damping = damping
        self.weight_decay = weight_decay
        self.out = out
        self.writers = reporting.DEFAULT_WRITERS if writers is None else writers
        self.plot = plot
        self.compute_self_influence = self_influence
        self.class_names = class_names
        self.batch_size = batch_size
        self.cache = cache
        self.progress = progress
        self.trigger = EndOfTraining()
        self.report = None  # the last InfluenceReport

    def __call__(self, trainer):
        start = time.time()
        optimizer = trainer.updater.get_optimizer('main')
        model = optimizer.target
        out_dir = os.path.join(trainer.out, self.out)
        weight_decay = (weight_decay_of(optimizer) if self.weight_decay is None
                        else self.weight_decay)
        calc = InfluenceFunctions(
            model, self.train, loss_fn=self.loss_fn, solver=self.solver,
            weight_decay=weight_decay, damping=self.damping, params=self.params,
            batch_size=self.batch_size, device=getattr(trainer.updater, 'device', None),
            cache_dir=(os.path.join(out_dir, 'cache', 'iteration_{}'.format(
                trainer.updater.iteration)) if self.cache else None),
            progress=self.progress)
        test_batch = get_batch(self.test, self.test_indices, calc.device)
        scores = calc.influence(test_batch)
        self_influence = calc.self_influence() if self.compute_self_influence else None
        predicted, losses = self._predict(model, test_batch)
        self.report = reporting.InfluenceReport(
            scores, self.test_indices, _host(test_batch[1]), self._train_labels(),
            predicted_labels=predicted, test_losses=losses, self_influence=self_influence,
            top_k=self.top_k, class_names=self.class_names,
            settings=self._settings(trainer, calc, weight_decay))
        self._write(out_dir)
        if not self.trigger.fired:  # called on a user's trigger: keep this run's results too
            self._write(os.path.join(out_dir, 'iteration_{}'.format(trainer.updater.iteration)))
        self._report(calc, time.time() - start)

    def finalize(self):
        if self.trigger.no_period and self.report is None:
            warnings.warn('InfluenceExtension did not run: the trainer\'s stop trigger has no '
                          'period, so the end of training is unknown in advance; pass '
                          'trigger=... to trainer.extend')

    def serialize(self, serializer):
        self.trigger.serialize(serializer['trigger'])

    # ---- internals -----------------------------------------------------------------------
    def _predict(self, model, batch):
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            logits = unwrap_model(model)(batch[0])
            losses = self.loss_fn(model, *batch)
        predicted = logits.array.argmax(axis=1) if logits.ndim == 2 else None
        return (None if predicted is None else _host(predicted)), _host(losses.array)

    def _train_labels(self):
        n = dataset_length(self.train)
        return numpy.concatenate([_host(get_batch(self.train, range(i, min(i + 4096, n)))[1])
                                  for i in range(0, n, 4096)])

    def _settings(self, trainer, calc, weight_decay):
        return {'solver': type(calc.solver).__name__, 'damping': self.damping,
                'weight_decay': weight_decay, 'params': calc.param_names,
                'n_params': calc.space.size, 'n_train': calc.n_train,
                'iteration': trainer.updater.iteration, 'epoch': trainer.updater.epoch,
                'top_k': self.top_k, 'loss_fn': getattr(self.loss_fn, '__name__', None)}

    def _write(self, out_dir):
        os.makedirs(out_dir, exist_ok=True)
        reporting.write_report(self.report, out_dir, self.writers)
        if self.plot:
            from chainer_influence import plots
            plots.plot_top_influential(self.report, self.test, self.train,
                                       os.path.join(out_dir, 'top_influential.png'))
            if self.report.self_influence is not None:
                plots.plot_self_influence(self.report.self_influence,
                                          os.path.join(out_dir, 'self_influence.png'))

    def _report(self, calc, seconds):
        prefix = self.out + '/'
        values = {prefix + 'time': seconds, prefix + 'n_test': len(self.test_indices),
                  prefix + 'n_train': calc.n_train}
        for key, value in getattr(calc.solver, 'diagnostics', {}).items():
            value = numpy.asarray(value)
            if value.dtype.kind in 'biuf' and value.size >= 1:
                # per-column diagnostics are summarised by their worst (largest) value
                values[prefix + 'solver/' + key] = float(value.max() if value.ndim else value)
        reporter.report(values)


def _host(array):
    return chainer.backend.CpuDevice().send(array)
