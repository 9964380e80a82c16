"""Influence of training examples on test losses (Koh & Liang 2017).

Signs (see the design contract): ``influence[m, i] = - grad L(z_test_m)^T (H + damping I)^-1
grad L(z_i)``. Negative: z_i is helpful (up-weighting it lowers the test loss). Positive: harmful.
Removing z_i changes the test loss by about ``-influence / N``.

Scoring streams once over the training set: the per-example gradient hook contracts each
example's gradient with the M s_test vectors inside the backward pass, so memory does not grow
with N and no (N, P) array is ever built.

With a ChainerMN communicator (``comm=``) every rank holds the same model, the full training set
and the same test points; each rank reads and scores only its contiguous shard of the training set,
every pass over it (Hessian-vector products, the gradient support, K-FAC factors) is summed across
ranks (so s_test is the same on every rank), and the (..., N) score arrays are gathered on rank 0:
``influence`` and ``self_influence`` return them there and None on the other ranks. See
:mod:`chainer_influence.distributed`.
"""
import sys
import warnings

import numpy

import chainer
import chainer.functions as F

from chainer_influence import checks
from chainer_influence import fingerprints
from chainer_influence import solvers as solvers_module
from chainer_influence.batches import CheckedDataset, dataset_length, get_batch, iterate_batches
from chainer_influence.cache import ScoreCache
from chainer_influence.curvature import Curvature
from chainer_influence.devices import model_device, to_host
from chainer_influence.distributed import digest
from chainer_influence.hooks import PerSampleGradientHook, exclusive_backward, record_eval_backward
from chainer_influence.kfac import KFACSolver
from chainer_influence.losses import softmax_cross_entropy_loss
from chainer_influence.progress import ProgressDisplay
# public names that lived here before moving to their own modules
from chainer_influence.relatif import (  # NOQA: F401
    NORMALIZATIONS, RELATIF_FLOOR, check_normalize, relatif_norms)
from chainer_influence.solver_choice import (  # NOQA: F401
    CG_MAX_TRAIN, EXACT_MAX_PARAMS, choose_solver, default_solver)

SCORE_BLOCK = 8192           # training examples per cached block of scores
# solvers whose solves, once they have factorised the curvature, read no training data (so with a
# communicator each rank solves its own rows); the others solve every rank's rows together
LOCAL_SOLVERS = (solvers_module.ExactSolver, KFACSolver)


class SelfInfluenceCostWarning(UserWarning):
    """Self-influence (and RelatIF) with this solver costs one solve per training example."""


class InfluenceFunctions(object):
    """Influence functions of a trained model over a training set.

    Args:
        model (chainer.Link): trained model (an ``L.Classifier`` is unwrapped by the loss).
        train: Chainer dataset of tuples (e.g. ``TupleDataset``) or a tuple of arrays.
        loss_fn: ``loss_fn(model, *batch)`` -> per-example losses (B,), twice differentiable.
        solver: ``ExactSolver``, ``CGSolver``, ``LiSSASolver``, ``KFACSolver`` or
            ``EKFACSolver``; None chooses (see
            :func:`~chainer_influence.solver_choice.choose_solver`) and says why on stderr.
        weight_decay (float or dict): the training objective's L2 term, as ``WeightDecay(rate)``;
            a dict ``{name: rate}`` gives each tracked parameter its own rate.
        damping (float or None): solves use H + damping I; None: the solver's
            ``default_damping(curvature)`` rule (Exact: 0 when H + weight_decay I is comfortably
            positive definite, else enough to make it so plus 0.1 x |trace| / P; CG/LiSSA: 0 when
            positive definite by construction, else 0.1 x |trace| / P; K-FAC/EK-FAC: 0.1 x the
            mean eigenvalue of the approximation, as Kronfluence).
        params (list of str): parameter names to restrict to (e.g. the last layer); None: all.
        batch_size (int): examples per forward/backward pass over the training set.
        device: Chainer device spec; None uses the model's device.
        cache_dir (str): where s_test and score blocks are cached; None: no cache.
        progress (bool): one progress display on a terminal covering every phase (Hessian,
            factors, solve, scoring); False silences all of them, a given solver's included.
            Rank 0 only.
        curvature (str or None): ``'hessian'`` or ``'gauss-newton'`` (J^T H_out J + weight_decay I,
            positive semi-definite; needs a loss with the output-Hessian protocol, see
            :class:`~chainer_influence.losses.OutputLoss`). None: 'hessian' when a solver is given,
            chosen with it when ``solver=None``. K-FAC and EK-FAC always work on the Gauss-Newton.
        comm: a ChainerMN communicator, or None (one process). With one, every rank must pass the
            same model, the FULL training set (each rank reads only its shard) and the same test
            points, and call the same methods in the same order. Score arrays are returned on
            rank 0 and None elsewhere; s_test, ``influence_on_params`` and
            ``perturbation_influence`` on every rank. Cache blocks are per rank, under
            ``cache_dir/<key>/rank<r>of<size>/``.

    ``solver_choice`` (a dict: solver, curvature, reason, damping, damping_rule) records what was
    used, for reports. Everything runs under ``chainer.using_config('train', False)``; the model's
    parameters and their ``.grad`` are left untouched. Score matrices are returned as numpy
    arrays, s_test on the model's device, in the model's dtype.

    Inputs are validated where they enter (see :mod:`chainer_influence.checks`): the arguments and
    the model here, the first training example at once, every other training example inside the
    first pass that reads it, test points and indices on each call.
    """

    def __init__(self, model, train, loss_fn=softmax_cross_entropy_loss, solver=None,
                 weight_decay=0.0, damping=None, params=None, batch_size=256, device=None,
                 cache_dir=None, progress=True, curvature=None, comm=None):
        checks.check_model(model)
        params = checks.resolve_param_names(model, params)
        self.model = model
        self.train = train
        self.n_train = dataset_length(train, 'training set')
        self.loss_fn = loss_fn
        if isinstance(weight_decay, dict):  # per-parameter rates {name: rate}
            self.weight_decay = {
                name: checks.check_non_negative(rate, 'weight_decay[{!r}]'.format(name))
                for name, rate in weight_decay.items()}
        else:
            self.weight_decay = checks.check_non_negative(weight_decay, 'weight_decay')
        self._damping = checks.check_damping(damping, allow_none=True)
        self._damping_given = damping is not None
        self.batch_size = checks.check_positive_int(batch_size, 'batch_size')
        self.device = model_device(model, device)
        first = get_batch(train, [0], self.device)
        self._example_rules = self._first_example_rules(first)
        self._train_shapes = [a.shape[1:] for a in first]
        self._data = CheckedDataset(train, checks.ExampleChecker(
            self.n_train, 'training set', **self._example_rules))
        kind = 'hessian' if curvature is None else curvature
        self.curvature = Curvature(model, loss_fn, self._data, params=params,
                                   weight_decay=weight_decay, batch_size=batch_size,
                                   device=self.device, curvature=kind, comm=comm)
        self.shard = self.curvature.shard
        self.progress = progress and self.shard.is_writer
        self.curvature.progress = ProgressDisplay(self.progress)
        if solver is None:
            solver, chosen, reason = choose_solver(self.curvature, curvature)
            if chosen != kind:
                self.curvature = Curvature(model, loss_fn, self._data, params=params,
                                           weight_decay=weight_decay, batch_size=batch_size,
                                           device=self.device, curvature=chosen, comm=comm)
                self.curvature.progress = ProgressDisplay(self.progress)
            self._say('solver=None: using {} on the {} ({})'.format(
                type(solver).__name__, chosen, reason))
        else:
            reason = 'given'
        self.space = self.curvature.space
        self.param_names = list(self.space.names)
        self.solver = checks.check_solver(solver)
        self._choice = {'solver': type(solver).__name__, 'reason': reason,
                        'curvature': ('gauss-newton' if isinstance(solver, KFACSolver)
                                      else self.curvature.kind)}
        self._fitted = False
        self._cache_store = None
        self._cache_dir = cache_dir
        self._dead = None  # (P,) bool: zero gradient for every training example; see _solve
        self._self_influence = None  # (hash of the parameter values, (N,) values)

    # ---- public API ----------------------------------------------------------------------
    @property
    def damping(self):
        """The damping of every solve: the user's, or the solver's default rule (computed on
        first use, after fitting or loading the solver's factors)."""
        if self._damping is None:
            self._prepare_solver()
            cache = self._cache()
            cached = cache.load('damping', (), numpy.float64)
            if self.shard.all(cached is not None):  # the rules may pass over the data
                self._damping = float(cached)
            else:
                rule = getattr(self.solver, 'default_damping', None)
                self._damping = 0.0 if rule is None else float(rule(self.curvature))
                cache.save('damping', numpy.float64(self._damping))
            self._say('damping=None: using damping={:.4g} ({} rule)'.format(
                self._damping, type(self.solver).__name__))
        return self._damping

    @property
    def solver_choice(self):
        """{'solver', 'curvature', 'reason', 'damping', 'damping_rule'}: what the solves use."""
        choice = dict(self._choice, damping=self.damping)
        choice['damping_rule'] = ('given' if self._damping_given
                                  else '{}.default_damping'.format(type(self.solver).__name__))
        return choice

    def s_test(self, test):
        """(M, P) = (H + damping I)^-1 grad L(z_test) for the M test points, one solve."""
        batch = self._test_batch(test)
        return self._s_test(batch, self._test_key(batch))

    def influence(self, test, s_test=None, normalize=None):
        """(M, N) I_up,loss for every (test point, training example) pair; see module docstring.

        One streaming pass over the training set (this rank's shard); ``s_test`` (M, P) skips
        the solve. With a communicator: the (M, N) array on rank 0, None on the other ranks.

        ``normalize='relatif'`` (Barshan et al. 2020, RelatIF) divides column i by
        ``sqrt(self_influence_i) = sqrt(grad L(z_i)^T (H + damping I)^-1 grad L(z_i))``, so that
        outliers with huge self-influence (mislabelled, atypical examples) stop topping every
        list; signs are unchanged (negative = helpful). It needs the self-influence of every
        training example, computed once per instance and reused for later test sets (see
        :meth:`self_influence`): one more pass over the training set with ``EKFACSolver`` or
        ``KFACSolver`` (no solve) or ``ExactSolver`` (one factorisation, reused), but one solve
        per training example (N solves) with ``CGSolver`` or ``LiSSASolver``, which warn. A self-influence below ``RELATIF_FLOOR`` times the
        largest is floored there (a zero gradient has zero influence: its score stays 0); a
        clearly negative one, which a positive-definite H + damping I cannot give, raises
        :class:`~chainer_influence.solvers.NotPositiveDefiniteError`.
        """
        check_normalize(normalize)
        batch = self._test_batch(test)
        test_key = self._test_key(batch)  # hashed once per call, only when caching
        if s_test is None:
            s_test = self._s_test(batch, test_key)
            prefix = 'scores_{}_'.format(test_key)
        else:
            s_test = self.space.xp.asarray(s_test)
            if s_test.ndim != 2 or s_test.shape != (len(batch[0]), self.space.size):
                raise ValueError('s_test must have shape (M={}, P={}), got {}'.format(
                    len(batch[0]), self.space.size, s_test.shape))
            prefix = 'scores_s{}_'.format(
                None if test_key is None else fingerprints.hash_arrays([s_test]).hexdigest()[:12])
        hook = PerSampleGradientHook(self.model, self.param_names)
        hook.contract_with(s_test.astype(self.curvature.dtype, copy=False))

        def block_scores(begin, end, train_batch):
            self._backward(hook, train_batch)
            return -hook.contractions.T

        scores = self._stream(prefix, block_scores, 'influence', (len(batch[0]),))
        if normalize == 'relatif':
            self_influence = self.self_influence()  # on every rank: it is collective
            if scores is not None:  # rank 0 (or one process)
                scores = scores / relatif_norms(self_influence)
        return scores

    def self_influence(self):
        """(N,) grad L(z_i)^T (H + damping I)^-1 grad L(z_i); large values flag outliers.

        Computed once per parameter values and kept (later calls, and ``influence(...,
        normalize='relatif')``, reuse it). One pass over the training set: ``KFACSolver`` and
        ``EKFACSolver`` evaluate the quadratic form inside the backward pass
        (``quadratic_form_hook``: about one batched backward, no per-example gradients),
        ``ExactSolver`` factorises once;
        ``CGSolver`` and ``LiSSASolver`` solve once per training example and warn
        (:class:`SelfInfluenceCostWarning`). With a communicator: the (N,) array on rank 0, None
        on the other ranks.
        """
        values_key = fingerprints.hash_arrays([p.array for p in self.space.params]).hexdigest()
        if self._self_influence is not None and self._self_influence[0] == values_key:
            return _copy(self._self_influence[1])
        damping = self.damping
        self._prepare_solver()
        quadratic_form_hook = getattr(self.solver, 'quadratic_form_hook', None)
        if quadratic_form_hook is not None:  # K-FAC / EK-FAC: no solve, no (B, P) gradients
            hook = quadratic_form_hook(self.curvature, damping=damping)

            def block_scores(begin, end, train_batch):
                self._backward(hook, train_batch)
                return hook.values

            values = self._stream('self_influence_', block_scores, 'self-influence', ())
        else:
            hook = PerSampleGradientHook(self.model, self.param_names)
            if not isinstance(self.solver, solvers_module.ExactSolver):
                warnings.warn('self-influence with {} solves once per training example (N={} '
                              'solves); ExactSolver factorises once, KFACSolver and EKFACSolver '
                              'need no solve'.format(type(self.solver).__name__, self.n_train),
                              SelfInfluenceCostWarning)

            def block_scores(begin, end, train_batch):
                if train_batch is None:  # this rank is done: it still takes part in the solves
                    self._take_part_in_solves()
                    return None
                self._backward(hook, train_batch)
                G = self.space.flatten(hook.gradients, lead_shape=(end - begin,))
                return (G * self._solve_rows(G)).sum(axis=1)

            values = self._stream('self_influence_', block_scores, 'self-influence', (),
                                  lockstep=True)
        self._self_influence = (values_key, values)
        return _copy(values)

    def influence_on_params(self, train_indices):
        """(K, P) I_up,params = -(H + damping I)^-1 grad L(z_i): d theta / d epsilon."""
        indices = checks.check_indices(train_indices, self.n_train, 'train_indices')
        batch = get_batch(self._data, indices, self.device)
        return -self._solve(self._gradients(batch))

    def perturbation_influence(self, test, train_indices):
        """(M, K, *x_shape) I_pert,loss = -grad_x [grad L(z_test)^T (H + damping I)^-1
        grad_theta L(z_i)]: how the test loss moves when training input x_i is perturbed.
        """
        indices = checks.check_indices(train_indices, self.n_train, 'train_indices')
        s_test = self.s_test(test)
        x, *rest = get_batch(self._data, indices, self.device)
        if x.dtype.kind != 'f':
            raise TypeError(
                'perturbation influence differentiates with respect to the training input, which '
                'must be floating point; got {} (token ids or labels have no input gradient)'
                .format(x.dtype))
        x = chainer.Variable(x)
        out = []
        with chainer.using_config('train', False), chainer.using_config('enable_backprop', True), \
                exclusive_backward():
            losses = self.loss_fn(self.model, x, *rest)
            grads = chainer.grad([F.sum(losses)], self.space.params, enable_double_backprop=True)
            for s in s_test:
                parts = self.space.unflatten(s)
                dot = sum(F.sum(g * parts[name]) for g, name in zip(grads, self.space.names)
                          if g is not None)
                gx, = chainer.grad([dot], [x])
                out.append(-gx.array)
        return to_host(self.space.xp.stack(out))

    # ---- internals -----------------------------------------------------------------------
    def _s_test(self, batch, test_key):
        cache = self._cache()
        name = 's_test_{}'.format(test_key)
        cached = cache.load(name, (len(batch[0]), self.space.size), self.curvature.dtype)
        if self.shard.all(cached is not None):  # ranks solve together or not at all
            return self.space.xp.asarray(cached)
        s = self._solve(self._gradients(batch))
        checks.check_finite(s, 's_test (the solver diverged or the Hessian is singular)')
        s = self.shard.bcast(s.astype(self.curvature.dtype, copy=False))  # same bits everywhere
        cache.save(name, s)
        return s

    def _solve(self, V):
        """(H + damping I)^-1 V (K, P), with coordinates no training example moves set apart.

        Where every training example's gradient is zero, H is weight_decay only and decoupled
        from the rest, so those coordinates are solved exactly (V / (weight_decay + damping), or
        0 when that is 0: they cannot change any score) and the solver gets V without them:
        otherwise a singular block makes CG stall and pollutes the other coordinates. K-FAC and
        EK-FAC need no such pass (about one epoch): such a coordinate lies in a zero-eigenvalue
        direction of their factors, divided by weight_decay + damping as above.
        """
        if isinstance(self.solver, KFACSolver):
            return self.solver.solve(self.curvature, V, damping=self.damping)
        dead = self._dead_coordinates()
        if dead is None:
            return self.solver.solve(self.curvature, V, damping=self.damping)
        X = self.solver.solve(self.curvature, V * ~dead, damping=self.damping)
        shift = self.weight_decay + self.damping
        return X + V * dead / shift if shift > 0 else X

    def _dead_coordinates(self):
        """(P,) bool on the device, or None when every coordinate has some gradient; warns once."""
        if self._dead is None:
            dead = ~self.curvature.gradient_support()
            self._dead = self.space.xp.asarray(dead) if dead.any() else False
            message = _dead_message(self.space, dead, self.weight_decay + self.damping)
            if message:
                warnings.warn(message)
        return None if self._dead is False else self._dead

    def _prepare_solver(self):
        """Load the solver's fitted factors from the cache, or fit and save them (K-FAC/EK-FAC)."""
        if self._fitted or not hasattr(self.solver, 'factors_to_arrays'):
            return
        cache = self._cache()
        arrays = cache.load_arrays('factors')
        if self.shard.all(arrays is not None):  # ranks fit together or not at all
            self.solver.factors_from_arrays(self.curvature, arrays)
        else:
            self.solver.fit(self.curvature)
            cache.save_arrays('factors', self.solver.factors_to_arrays())
        self._fitted = True

    def _stream(self, prefix, block_scores, title, lead_shape, lockstep=False):
        """Concatenate ``block_scores(begin, end, batch)`` (*lead, end - begin) over this rank's
        shard in cached blocks; the (*lead, N) result on rank 0 (None on the other ranks).

        ``lockstep``: ``block_scores`` may run collectives, so every rank calls it equally
        often; a rank without batches left calls ``block_scores(None, None, None)``.
        """
        cache = self._cache()
        ranges = [(begin, min(begin + SCORE_BLOCK, self.shard.end))
                  for begin in range(self.shard.begin, self.shard.end, SCORE_BLOCK)]
        names = ['{}{}_{}'.format(prefix, begin, end) for begin, end in ranges]
        blocks = [cache.load(name, lead_shape + (end - begin,), self.curvature.dtype)
                  for name, (begin, end) in zip(names, ranges)]
        with self.curvature.progress.phase(title, len(self.shard)) as bar:
            bar.update(sum(e - b for (b, e), block in zip(ranges, blocks) if block is not None))
            work = ((i, b, e, batch) for i, (begin, end) in enumerate(ranges) if blocks[i] is None
                    for b, e, batch in self._batches(begin, end, bar))
            parts = []
            for item in (self.shard.lockstep(work) if lockstep else work):
                if item is None:
                    block_scores(None, None, None)
                    continue
                i, b, e, batch = item
                parts.append(to_host(block_scores(b, e, batch)))
                if e == ranges[i][1]:
                    blocks[i] = numpy.concatenate(parts, axis=-1).astype(self.curvature.dtype,
                                                                         copy=False)
                    parts = []
                    checks.check_finite(blocks[i], title + ' scores')
                    cache.save(names[i], blocks[i])
        return self.shard.gather_concat(numpy.concatenate(blocks, axis=-1))

    def _solve_rows(self, G):
        """(H + damping I)^-1 G for this rank's rows G (B, P). With a communicator every rank
        calls this together: a factorising solver (Exact, K-FAC) factorises together once, then
        solves its own rows; an iterative one (CG, LiSSA) solves all ranks' rows together."""
        if not self.shard.distributed or isinstance(self.solver, LOCAL_SOLVERS):
            return self._solve(G)
        rows, offset = self.shard.allgather_rows(G)
        return self._solve(rows)[offset:offset + len(G)]

    def _take_part_in_solves(self):
        """What a rank without rows left does while the others call :meth:`_solve_rows`: the same
        call with no rows, so it joins their collectives (Exact's one-time factorisation, the joint
        solve of CG and LiSSA). K-FAC's factors are fitted before the stream: nothing to do."""
        if not isinstance(self.solver, KFACSolver):
            self._solve_rows(self.space.xp.zeros((0, self.space.size), self.curvature.dtype))

    def _batches(self, begin, end, bar):
        for b, e, batch in iterate_batches(self._data, self.batch_size, self.device, begin, end):
            yield b, e, batch
            bar.update(e - b)

    def _backward(self, hook, batch):
        record_eval_backward(hook, self.model, self.loss_fn, batch)

    def _gradients(self, batch):
        """Flat per-example gradients (B, P) of a (small) batch."""
        hook = PerSampleGradientHook(self.model, self.param_names)
        self._backward(hook, batch)
        G = self.space.flatten(hook.gradients, lead_shape=(len(batch[0]),))
        checks.check_finite(G, 'per-example gradients')
        return G

    def _first_example_rules(self, first):
        """Check the first training example; the rules (``check_examples`` options) for all."""
        rules = {'integer_inputs': checks.takes_integer_inputs(self.model)}
        checks.check_examples(first, 'training set', **rules)  # dtypes, before a forward pass
        rules['n_outputs'] = (checks.model_output_size(self.model, first[0])
                              if getattr(self.loss_fn, 'class_labels', False) else None)
        checks.check_examples(first, 'training set', **rules)
        return rules

    def _test_batch(self, test):
        """Test points as a tuple of device arrays, checked against the training data's form."""
        n = dataset_length(test, 'test set')
        batch = get_batch(test, numpy.arange(n), self.device)
        checks.check_examples(batch, 'test set', reference=self._train_shapes,
                              **self._example_rules)
        if self.shard.distributed:
            self.shard.check_same(digest(*batch), 'the test points')
        return batch

    def _test_key(self, batch):
        """A hash of the test points for block names; None when not caching."""
        if self._cache().directory is None:
            return None
        return fingerprints.hash_arrays(batch).hexdigest()[:12]

    def _cache(self):
        if self._cache_store is None:
            key = settings = None
            if self._cache_dir is not None:
                try:
                    settings = self._cache_settings()
                except fingerprints.UnidentifiableError as e:
                    warnings.warn(
                        'not caching under {}: {}, so the cache could not tell this loss '
                        'function from another. Use a module-level loss function whose '
                        'closure and defaults hold plain values or arrays, or cache_dir=None.'
                        .format(self._cache_dir, e))
                    self._cache_dir = None
                else:
                    key = fingerprints.hash_json(settings)[:16]
            part = ('rank{}of{}'.format(self.shard.rank, self.shard.size)
                    if self.shard.distributed and self._cache_dir is not None else None)
            self._cache_store = ScoreCache(self._cache_dir, key, settings, part=part)
        return self._cache_store

    def _cache_settings(self):
        """Everything the cached results depend on, as a JSON-able dict (hashes for the bulk)."""
        settings = fingerprints.score_settings(
            self.model, self.loss_fn, get_batch(self.train, [0], self.device), self.solver)
        settings.update({
            'train_sha1': self._train_sha1(),
            'n_train': self.n_train, 'params': self.param_names,
            'weight_decay': self.weight_decay,
            'curvature': self.curvature.kind, 'score_block': SCORE_BLOCK,
            'damping': self._damping if self._damping_given else 'default',
        })
        return settings

    def _train_sha1(self):
        """The hash of every training example; with a communicator, each rank hashes its shard
        and the rank-ordered shard hashes are hashed (the same key on every rank)."""
        if not self.shard.distributed:
            return fingerprints.hash_dataset(self._data)
        local = fingerprints.hash_dataset(self._data, begin=self.shard.begin, end=self.shard.end)
        return fingerprints.hash_json(self.shard.allgather_obj(local))

    def _say(self, message):
        if self.progress:
            sys.stderr.write('chainer_influence: {}\n'.format(message))


def _dead_message(space, dead, shift):
    """A warning naming the parameters whose gradient is zero for every training example, or
    None when there are none (single dead entries, e.g. weights of always-zero pixels, are
    common and handled silently)."""
    names = [name for name in space.names if dead[space.slice(name)].all()]
    if not names:
        return None
    return ('tracked parameters with zero gradient for every training example: {}. No training '
            'example has influence through them; their rows of H are weight_decay only{}, so they '
            'are solved apart (s_test there is grad / (weight_decay + damping){}). To leave them '
            'out, pass params= without them.'.format(
                ', '.join(names), ' (singular: weight_decay + damping = 0)' if shift == 0 else '',
                ', here 0' if shift == 0 else ''))


def _copy(array):
    """A copy of ``array``, or None (the other ranks' share of a gathered result)."""
    return None if array is None else array.copy()

