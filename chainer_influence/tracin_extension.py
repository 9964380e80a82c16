"""``TracInExtension``: TracIn scores accumulated while the model trains."""
import os
import warnings

from chainer_influence import checks
from chainer_influence import report_files
from chainer_influence.batches import get_batch
from chainer_influence.devices import model_device
from chainer_influence.extension import (InfluenceExtension, InfluenceRunWarning,
                                         InfluenceWriteError)
from chainer_influence.parameters import ParameterSpace
from chainer_influence.tracin import TracInScores, gradient_dots, is_adam_like, learning_rate


class TracInExtension(InfluenceExtension):
    """Trainer extension that ranks training examples by TracIn (Pruthi et al. 2020), online.

    Use it with any trigger, e.g. ``trainer.extend(ci.TracInExtension(train, test),
    trigger=(1, 'epoch'))`` (the default trigger). At each trigger it adds, for every training
    example z_i and test point z_test, ``lr * grad L(z_test) . grad L(z_i)`` at the current
    parameters to a running sum, and reports

        score = -(sum over triggers of lr * grad L(z_test) . grad L(z_i))

    in the library's sign convention: **negative = helpful** (its gradient steps lowered the
    test loss), positive = harmful. ``lr`` is read from the optimizer at each trigger (see
    :func:`chainer_influence.tracin.learning_rate`: ``lr``, or Adam's ``eta * alpha_t``, an
    approximation since Adam preconditions its steps), or fixed by ``lr=``. The sum is a
    checkpoint approximation (TracInCP): triggering more often follows training more closely.

    Cost per trigger: one backward pass over the test points and one batched pass over the
    training set whose per-example gradients are contracted with the M test gradients inside the
    backward pass (no checkpoint files, no (N, P) array). No Hessian, no solver: the loss need not
    be twice differentiable and the weight decay is not read.

    Everything else is :class:`InfluenceExtension`'s: the checks at ``initialize``, the loss read
    from the trainer, ``on_error``, the files ``rankings.json``, ``rankings.csv`` and
    ``influence.npz`` under ``trainer.out/<out>/`` (``tracin/`` by default), rewritten at every
    trigger with the sum so far (``settings`` lists the triggers' ``iterations`` and
    ``learning_rates``). The figure ``top_influential.png`` of the final sum is drawn once, when
    training ends (a figure takes seconds; the files take milliseconds). Reported keys:
    ``<out>/failed``, ``<out>/time``, ``<out>/n_test``, ``<out>/n_train``, ``<out>/lr``,
    ``<out>/checkpoints``. The running sum is part of the extension's state, so it survives
    ``extensions.snapshot`` and resumes.

    Args:
        train, test, test_indices, top_k, loss_fn, writers, plot, class_names, batch_size,
            progress, on_error, value_range, keys: as for :class:`InfluenceExtension`.
        params (list of str): parameter names to restrict to (e.g. the last layer, as Pruthi
            et al. do for speed); None: all.
        lr (float or None): a fixed step size; None reads it from the optimizer at each trigger.
        out (str): output folder under ``trainer.out`` and prefix of the reported keys.
    """

    trigger = 1, 'epoch'
    name = 'TracInExtension'
    uses_curvature = False
    shards_training_set = False  # one process computes it all (no communicator support yet)

    def __init__(self, train, test, test_indices=None, top_k=10, loss_fn=None, params=None,
                 lr=None, out='tracin', writers=None, plot=True, class_names=None,
                 batch_size=256, progress=True, on_error='warn', value_range=None, keys=None):
        super(TracInExtension, self).__init__(
            train, test, test_indices=test_indices, top_k=top_k, loss_fn=loss_fn,
            params=params, out=out, writers=writers, plot=plot, class_names=class_names,
            batch_size=batch_size, cache=False, progress=progress, on_error=on_error,
            value_range=value_range, keys=keys)
        self.trigger = TracInExtension.trigger
        self.lr = None if lr is None else checks.check_finite_positive(lr, 'lr')
        self.sum = TracInScores()
        self._figure_dir = None

    def finalize(self):
        """Draw the figures of the final sum (once); warn when the trigger never fired."""
        if self.report is None:
            if self._setup is not None and not self.sum.iterations:
                warnings.warn('TracInExtension did not run: its trigger never fired')
            return
        if not self.plot or self._figure_dir is None:
            return
        failures = report_files.write_all(self.report, self._figure_dir, self._figures())[1]
        if failures:
            path = report_files.write_error(self._figure_dir, failures)
            message = 'TracInExtension figures failed ({}); details in {}'.format(
                report_files.summary(failures), path)
            if self.error_policy == 'raise':
                raise InfluenceWriteError(message)
            warnings.warn(message, InfluenceRunWarning)

    def serialize(self, serializer):
        self.sum.serialize(serializer['sum'])

    def _compute(self, trainer):
        s = self._setup
        self.report = None
        optimizer = s['optimizer']
        lr = learning_rate(optimizer) if self.lr is None else self.lr
        device = model_device(s['model'], getattr(trainer.updater, 'device', None))
        test_batch = get_batch(s['test'], s['test_indices'], device)
        dots = gradient_dots(s['model'], s['loss_fn'], s['train'], test_batch,
                             params=s['params'], batch_size=self.batch_size,
                             progress=self.progress)
        self.sum.add(dots, lr, trainer.updater.iteration)
        space = ParameterSpace(s['model'], s['params'])
        settings = {
            'method': 'TracIn', 'params': space.names, 'n_params': space.size,
            'n_train': dots.shape[1], 'iteration': trainer.updater.iteration,
            'epoch': trainer.updater.epoch, 'top_k': self.top_k,
            'loss_fn': getattr(s['loss_fn'], '__name__', None),
            'optimizer': type(optimizer).__name__,
            'learning_rate': ('fixed' if self.lr is not None else
                              'eta * alpha_t (Adam; approximation)'
                              if is_adam_like(optimizer) else 'lr'),
            'iterations': list(self.sum.iterations),
            'learning_rates': list(self.sum.learning_rates)}
        self.report = self._make_report(test_batch, self.sum.scores, None, settings)
        self._figure_dir = os.path.join(trainer.out, self.out)
        return {'lr': lr, 'checkpoints': len(self.sum.iterations)}

    def _keeps_history(self, trainer):
        return False  # every trigger rewrites the running sum; settings list the triggers

    def _outputs(self):
        return list(self.writers)  # figures once, in finalize
