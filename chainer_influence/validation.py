"""Checks of influence against ground truth (Koh & Liang 2017): leave-one-out retraining
(Fig. 2, Fig. 3) and mislabel detection by self-influence (Sec. 5.4).

Signs follow the design contract: removing z_i changes the test loss by about ``-influence / N``,
so leave-one-out compares ``predicted = -influence / N`` with the measured change
``L(z_test; theta_{-i}) - L(z_test; theta)``.

A *retrainer* is a callable ``retrain(model, train, weights)`` that minimises
R_w(theta) = (1/N) sum_i w_i L(z_i) + weight_decay/2 ||theta||^2 in place, starting from the model's
parameters; ``weights[i] = 0`` removes z_i and keeps the 1/N normalisation.
"""
import numpy

import chainer
import chainer.functions as F
from chainer.optimizer_hooks import WeightDecay

from chainer_influence.batches import dataset_length, get_batch, iterate_batches
from chainer_influence.parameters import unwrap_model
from chainer_influence.progress import Progress
from chainer_influence.devices import to_host
from chainer_influence.retraining import fit_lbfgs

CHECKPOINTS = (0.05, 0.1, 0.2, 0.3)  # fractions of the training set checked (Sec. 5.4)


# ---- statistics ------------------------------------------------------------------------------
def rankdata(values):
    """Ranks 1..n of a (n,) array, ties sharing their average rank (as scipy.stats.rankdata)."""
    values = numpy.asarray(values, dtype=numpy.float64)
    order = numpy.argsort(values, kind='stable')
    sorted_values = values[order]
    starts = numpy.flatnonzero(numpy.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = numpy.r_[starts[1:], len(values)]
    average = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = numpy.empty(len(values))
    ranks[order] = numpy.repeat(average, ends - starts)
    return ranks


def pearson(a, b):
    """Pearson correlation of two (n,) arrays."""
    return float(numpy.corrcoef(numpy.asarray(a, numpy.float64),
                                numpy.asarray(b, numpy.float64))[0, 1])


def spearman(a, b):
    """Spearman rank correlation: Pearson of the (tie-averaged) ranks."""
    return pearson(rankdata(a), rankdata(b))


def roc_auc(scores, positives):
    """ROC AUC of ranking by ``scores`` (high = positive), from ranks (Mann-Whitney U).

    ``positives``: boolean (N,) mask or indices of the positive examples. Ties count one half.
    """
    scores = numpy.asarray(scores, dtype=numpy.float64)
    mask = numpy.zeros(len(scores), dtype=bool)
    mask[numpy.asarray(positives)] = True
    n_pos, n_neg = int(mask.sum()), int((~mask).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError('ROC AUC needs positive and negative examples')
    u = rankdata(scores)[mask].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


# ---- losses and retrainers -------------------------------------------------------------------
def per_example_losses(model, loss_fn, data, batch_size=1024):
    """``loss_fn`` on every example of ``data`` as a numpy float64 (N,), in test mode."""
    out = []
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        for _, _, batch in iterate_batches(data, batch_size):
            out.append(to_host(loss_fn(model, *batch).array, numpy.float64))
    return numpy.concatenate(out)


class LBFGSRetrainer(object):
    """Full-batch L-BFGS (:func:`retraining.fit_lbfgs`) until max |gradient| < ``gtol``, or for
    ``max_iter`` iterations at most (a fixed budget of steps for non-convex models).

    ``grad_norms`` lists the final max |gradient| of every call, to check convergence.
    """

    def __init__(self, loss_fn, weight_decay=0.0, params=None, gtol=1e-9, max_iter=2000):
        self.loss_fn = loss_fn
        self.weight_decay = weight_decay
        self.params = params
        self.gtol = gtol
        self.max_iter = max_iter
        self.grad_norms = []

    def __call__(self, model, train, weights):
        self.grad_norms.append(fit_lbfgs(model, self.loss_fn, train, self.weight_decay, weights,
                                         self.params, self.gtol, self.max_iter))


class MomentumSGDRetrainer(object):
    """A fixed number of momentum-SGD steps on R_w (Koh & Liang's retraining of networks).

    Each call draws the same minibatch sequence (``RandomState(seed)``; ``batch_size=None``: full
    batch), so two retrainings differ only by the weights. A minibatch's loss is
    ``sum_b w_b L(z_b) / B``, an unbiased estimate of the loss term of R_w; the L2 term is
    Chainer's ``WeightDecay(weight_decay)``. Runs in test mode (``train=False``).
    """

    def __init__(self, loss_fn, weight_decay, steps, lr, momentum=0.9, batch_size=None, seed=0):
        self.loss_fn = loss_fn
        self.weight_decay = weight_decay
        self.steps = int(steps)
        self.lr = lr
        self.momentum = momentum
        self.batch_size = batch_size
        self.seed = seed

    def __call__(self, model, train, weights):
        n = dataset_length(train)
        link = unwrap_model(model)
        optimizer = chainer.optimizers.MomentumSGD(lr=self.lr, momentum=self.momentum)
        optimizer.setup(link)
        optimizer.add_hook(WeightDecay(self.weight_decay))
        device = chainer.backend.get_device_from_array(next(iter(link.params())).array)
        rng = numpy.random.RandomState(self.seed)
        with chainer.using_config('train', False):
            for _ in range(self.steps):
                if self.batch_size is None or self.batch_size >= n:
                    indices = numpy.arange(n)
                else:
                    indices = numpy.sort(rng.choice(n, self.batch_size, replace=False))
                batch = get_batch(train, indices, device)
                losses = self.loss_fn(model, *batch)
                w = losses.xp.asarray(weights[indices], dtype=losses.dtype)
                link.cleargrads()
                (F.sum(losses * w) / len(indices)).backward()
                optimizer.update()


def fit_hinge_svm(features, labels, weight_decay, weights=None, alpha0=None, tol=1e-9):
    """Exact minimiser of the linear SVM objective with the true hinge:
    (1/N) sum_i w_i max(0, 1 - y_i theta.x_i) + weight_decay/2 ||theta||^2.

    Args:
        features: (N, D); labels: (N,), +1 where > 0 and -1 elsewhere.
        weights: (N,) >= 0, default ones; alpha0: (N,) dual warm start (default zeros).
    Returns:
        (theta (D,), alpha (N,), kkt): ``alpha`` solves the dual box QP
        min 1/2 ||Z^T alpha||^2 - sum alpha, 0 <= alpha_i <= C_i = w_i / (weight_decay N), with
        Z = y * X and theta = Z^T alpha. Active-set steps (alpha fixed at 0 or C_i off the free
        set F, Q_FF alpha_F = 1 - Q_FU C_U on it; Hintermueller, Ito & Kunisch 2002) give the exact
        solution once they start from the right sets, and are accepted when the sets reproduce
        themselves. They start from the warm start, then from dual coordinate descent (Hsieh et
        al. 2008) run to tighter and tighter tolerances. ``kkt`` is the largest KKT violation
        (:func:`_svm_kkt_violation`); raises ArithmeticError if it never falls below ``tol``.
    """
    X = numpy.asarray(features, dtype=numpy.float64)
    n = len(X)
    Z = X * numpy.where(numpy.asarray(labels) > 0, 1.0, -1.0)[:, None]
    weights = numpy.ones(n) if weights is None else numpy.asarray(weights, dtype=numpy.float64)
    C = weights / (weight_decay * n)
    Q = Z.dot(Z.T)
    if not Q.diagonal().all():
        raise ValueError('hinge SVM: all-zero feature vectors at {}'.format(
            numpy.flatnonzero(Q.diagonal() == 0)))
    alpha = numpy.zeros(n) if alpha0 is None else numpy.clip(alpha0, 0.0, C)
    kkt = numpy.inf
    for precision in (None, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8):
        if precision is not None:  # first try the active set of the warm start as it is
            alpha = _coordinate_descent(Q, C, alpha, precision)
        exact, settled = _active_set_steps(Q, C, alpha)
        if settled:
            kkt = _svm_kkt_violation(exact, Q.dot(exact) - 1.0, C)
            if kkt <= tol:
                return Z.T.dot(exact), exact, kkt
    raise ArithmeticError('hinge SVM: no exact solution found (KKT violation {:.3g} > tol '
                          '{:.3g})'.format(kkt, tol))


def _coordinate_descent(Q, C, alpha, precision, max_epochs=10000):
    """Dual coordinate descent in a fixed cyclic order until every projected gradient is below
    ``precision``; returns the new alpha."""
    alpha = alpha.copy()
    gradient = Q.dot(alpha) - 1.0
    diagonal = Q.diagonal()
    for _ in range(max_epochs):
        worst = 0.0
        for i in range(len(alpha)):
            g = gradient[i]
            if (alpha[i] <= 0.0 and g >= 0.0) or (alpha[i] >= C[i] and g <= 0.0):
                continue  # at a bound, pushed against it
            worst = max(worst, abs(g))
            new = min(max(alpha[i] - g / diagonal[i], 0.0), C[i])
            gradient += (new - alpha[i]) * Q[i]
            alpha[i] = new
        if worst < precision:
            break
    return alpha


def _active_set_steps(Q, C, alpha, max_steps=30):
    """Active-set steps on the SVM dual from the sets ``alpha`` points at; returns (alpha, whether
    the sets reproduced themselves)."""
    step = 1.0 / Q.diagonal().max()
    sets = None
    for _ in range(max_steps):
        trial = alpha - step * (Q.dot(alpha) - 1.0)  # the gradient is margins - 1
        new_sets = (trial <= 0.0, trial >= C)
        if sets is not None and all((a == b).all() for a, b in zip(sets, new_sets)):
            return alpha, True
        sets = new_sets
        free = numpy.flatnonzero(~(sets[0] | sets[1]))
        alpha = numpy.where(sets[1], C, 0.0)
        if free.size:
            Q_free = Q[numpy.ix_(free, free)]
            rhs = 1.0 - Q[free].dot(alpha)
            try:
                alpha[free] = numpy.linalg.solve(Q_free, rhs)
            except numpy.linalg.LinAlgError:  # more free examples than dimensions
                alpha[free] = numpy.linalg.lstsq(Q_free, rhs, rcond=None)[0]
    return alpha, False


def _svm_kkt_violation(alpha, g, C):
    """Largest KKT violation of the dual box QP, g = margins - 1: alpha outside [0, C] (relative
    to max C); g < 0 at alpha = 0, g > 0 at alpha = C, g != 0 in between (margin units). Examples
    with C_i = 0 (removed) have no condition."""
    outside = numpy.maximum(numpy.maximum(-alpha, alpha - C), 0.0).max() / C.max()
    stationarity = numpy.where(alpha <= 0.0, -g, numpy.where(alpha >= C, g, numpy.abs(g)))
    return float(max(outside, numpy.where(C > 0, stationarity, 0.0).max(), 0.0))


class HingeSVMRetrainer(object):
    """Fit a linear SVM (one ``L.Linear`` with one output) with the true hinge, exactly
    (:func:`fit_hinge_svm`), as Koh & Liang did before computing smooth-hinge influence.

    A bias, when present, is a constant-1 feature under the same weight decay, as in the objective
    that influence is defined on. The first call's dual solution warm-starts the next ones.
    ``kkt`` lists the KKT violation of every fit.
    """

    def __init__(self, weight_decay):
        self.weight_decay = weight_decay
        self.kkt = []
        self._alpha = None

    def __call__(self, model, train, weights):
        link = unwrap_model(model)
        if not isinstance(link, chainer.links.Linear) or link.W.shape[0] != 1:
            raise TypeError('HingeSVMRetrainer fits an L.Linear with one output, got {}'.format(
                type(link).__name__))
        x, y = get_batch(train, numpy.arange(dataset_length(train)))[:2]
        X = to_host(x, numpy.float64).reshape(len(x), -1)
        if link.b is not None:
            X = numpy.hstack([X, numpy.ones((len(X), 1))])
        theta, alpha, kkt = fit_hinge_svm(X, to_host(y), self.weight_decay, weights,
                                          alpha0=self._alpha)
        if self._alpha is None:
            self._alpha = alpha
        self.kkt.append(kkt)
        xp = link.xp
        link.W.array[...] = xp.asarray(theta[:link.W.size].reshape(link.W.shape))
        if link.b is not None:
            link.b.array[...] = xp.asarray(theta[-1:])


# ---- leave-one-out ---------------------------------------------------------------------------
def leave_one_out(model, loss_fn, train, test, indices, retrain, progress=True):
    """Measured change of each test loss when each training example is removed: (K, M).

    Row k: ``loss_fn`` on the M test points after ``retrain`` of a copy of ``model`` with
    ``weights[indices[k]] = 0``, minus the same after ``retrain`` with all weights 1 (at a converged
    optimum a no-op; for a fixed number of SGD steps it cancels the drift those steps cause anyway).
    """
    n = dataset_length(train, 'training set')
    baseline = model.copy(mode='copy')
    retrain(baseline, train, numpy.ones(n))
    base = per_example_losses(baseline, loss_fn, test)
    changes = numpy.empty((len(indices), len(base)))
    with Progress(len(indices), 'leave-one-out', enabled=progress) as bar:
        for k, i in enumerate(indices):
            weights = numpy.ones(n)
            weights[int(i)] = 0.0
            retrained = model.copy(mode='copy')
            retrain(retrained, train, weights)
            changes[k] = per_example_losses(retrained, loss_fn, test) - base
            bar.update()
    return changes


def loo_validation(model, loss_fn, train, test, scores, retrain, n_remove=100, candidates=None,
                   progress=True):
    """Predicted (-influence / N) against measured leave-one-out changes of the test losses.

    Args:
        scores (dict): name -> (M, N) influence for the M test points (e.g. one per solver). The
            first entry picks, per test point, the ``n_remove`` training examples of largest
            |influence|; their union is retrained once each (every retraining scores all M points).
        loss_fn: the test loss whose change is measured (e.g. the true hinge for an SVM).
        candidates: boolean (N,) mask of the training examples that may be removed; None: all.
    Returns:
        dict: ``removed`` (M, R) training indices, ``actual`` (M, R) measured changes, and
        ``methods``: name -> {``predicted`` (M, R), ``pearson`` (M,), ``spearman`` (M,),
        ``slope`` (M,): least-squares slope of actual on predicted, 1 when the sizes agree}.
    """
    names = list(scores)
    reference = numpy.asarray(scores[names[0]])
    n = reference.shape[1]
    size = numpy.abs(reference)
    if candidates is not None:
        size = numpy.where(numpy.asarray(candidates, dtype=bool), size, -1.0)
        n_remove = min(n_remove, int(numpy.count_nonzero(candidates)))
    removed = numpy.argsort(-size, axis=1, kind='stable')[:, :n_remove]
    union = numpy.unique(removed)
    changes = leave_one_out(model, loss_fn, train, test, union, retrain, progress)
    rows = numpy.arange(len(removed))[:, None]
    actual = changes[numpy.searchsorted(union, removed), rows]
    methods = {}
    for name in names:
        predicted = -numpy.asarray(scores[name])[rows, removed] / n
        methods[name] = {
            'predicted': predicted,
            'pearson': numpy.array([pearson(p, a) for p, a in zip(predicted, actual)]),
            'spearman': numpy.array([spearman(p, a) for p, a in zip(predicted, actual)]),
            'slope': numpy.array([numpy.polyfit(p, a, 1)[0] for p, a in zip(predicted, actual)]),
        }
    return {'removed': removed, 'actual': actual, 'methods': methods}


# ---- mislabel detection ----------------------------------------------------------------------
def flip_labels(labels, fraction, n_classes=None, seed=0):
    """Corrupt ``round(fraction * N)`` labels, drawn with ``RandomState(seed)``, to a class drawn
    uniformly from the other ``n_classes - 1`` (default: max label + 1; for two classes, the other).

    Returns (noisy labels (N,) of the same dtype, flipped indices (F,) sorted).
    """
    labels = numpy.asarray(labels)
    n_classes = int(labels.max()) + 1 if n_classes is None else int(n_classes)
    rng = numpy.random.RandomState(seed)
    flipped = numpy.sort(rng.choice(len(labels), int(round(fraction * len(labels))),
                                    replace=False))
    noisy = labels.copy()
    shift = rng.randint(1, n_classes, size=len(flipped))  # never 0: always another class
    noisy[flipped] = (labels[flipped] + shift) % n_classes
    return noisy, flipped


def detection_curve(scores, flipped):
    """Fraction of flipped labels found against fraction of the data checked, checking training
    examples in decreasing ``scores`` order (ties by index). Returns (checked (N+1,), found (N+1,)),
    both starting at 0."""
    scores = numpy.asarray(scores, dtype=numpy.float64)
    mask = numpy.zeros(len(scores), dtype=bool)
    mask[numpy.asarray(flipped)] = True
    order = numpy.argsort(-scores, kind='stable')
    found = numpy.r_[0, numpy.cumsum(mask[order])] / float(mask.sum())
    return numpy.arange(len(scores) + 1) / float(len(scores)), found


def detection_summary(scores, flipped, checkpoints=CHECKPOINTS):
    """{``auc``, ``found_at`` {fraction checked: fraction found}, ``checked``, ``found``}; the
    k-th checkpoint checks ``ceil(fraction * N)`` examples."""
    checked, found = detection_curve(scores, flipped)
    n = len(checked) - 1
    return {'auc': roc_auc(scores, flipped),
            'found_at': {c: float(found[int(numpy.ceil(c * n - 1e-9))]) for c in checkpoints},
            'checked': checked, 'found': found}


def mislabel_detection(calc, flipped, checkpoints=CHECKPOINTS, seed=1):
    """Rank the training set of ``calc`` (an ``InfluenceFunctions`` on a model trained with the
    noisy labels) by self-influence, by training loss and at random (``RandomState(seed)``; use
    another seed than :func:`flip_labels` got, so that the two draws are independent).

    Returns name -> :func:`detection_summary` plus ``scores`` (N,).
    """
    rankings = {
        'self-influence': calc.self_influence(),
        'training loss': per_example_losses(calc.model, calc.loss_fn, calc.train),
        'random': numpy.random.RandomState(seed).rand(calc.n_train),
    }
    results = {}
    for name, scores in rankings.items():
        results[name] = detection_summary(scores, flipped, checkpoints)
        results[name]['scores'] = numpy.asarray(scores, dtype=numpy.float64)
    return results
