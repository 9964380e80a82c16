"""Solver measurements: ``influence()`` including the solve for s_test, in seconds and epochs.

* ``b1_cg``, ``b100_cg``, ``b1_lissa``, ``b100_lissa``: ``influence()`` for 1 and 100 test points
  including the solve, with CG (``--cg-iters`` iterations, tol 0) or LiSSA (``--lissa-depth`` steps
  on minibatches of ``--lissa-batch``) on the Hessian, see :func:`solver_times`; a b100 solve that
  does not fit ``--solver-budget`` seconds runs fewer iterations and is scaled (listed in
  ``extrapolated``);
* ``b1_ekfac``, ``b100_ekfac``: the same with a fresh :class:`~chainer_influence.EKFACSolver` on
  the Gauss-Newton (``--ekfac-fisher``, the default damping), everything included: fitting the
  factors (two passes over the training set), the solve and the scoring pass; ``ekfac_fit``: the
  fitting alone; ``self_ekfac``: ``self_influence()`` of all N with the factors fitted (one pass).
  The factors' memory is ``solvers.ekfac.factor_bytes``. See :func:`ekfac_times`.
"""
import warnings

import numpy

import chainer_influence as ci

from benchmarks.common import M_MANY, best_time

EIGENVALUE_SAMPLE = 1024  # training examples for the (untimed) top-eigenvalue estimate

ROWS = [  # (label, section, key, unit) of the table
    ('b1 + CG solve', 'times_s', 'b1_cg', 's'),
    ('b100 + CG solve', 'times_s', 'b100_cg', 's'),
    ('b1 + LiSSA solve', 'times_s', 'b1_lissa', 's'),
    ('b100 + LiSSA solve', 'times_s', 'b100_lissa', 's'),
    ('b1 + EK-FAC (fit, solve, score)', 'times_s', 'b1_ekfac', 's'),
    ('b100 + EK-FAC (fit, solve, score)', 'times_s', 'b100_ekfac', 's'),
    ('EK-FAC factor fitting alone', 'times_s', 'ekfac_fit', 's'),
    ('EK-FAC self-influence of all N, factors fitted', 'times_s', 'self_ekfac', 's'),
    ('(b100 + CG) / a', 'ratios', 'b100_cg_over_a', 'x'),
    ('(b100 + LiSSA) / a', 'ratios', 'b100_lissa_over_a', 'x'),
    ('(b100 + EK-FAC) / a (target <= 5)', 'ratios', 'b100_ekfac_over_a', 'x'),
    ('EK-FAC fitting / a', 'ratios', 'ekfac_fit_over_a', 'x'),
    ('EK-FAC factor memory', 'solvers', ('ekfac', 'factor_bytes'), 'bytes'),
]


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


def ekfac_times(model, train, tests, args):
    """``(times, settings)`` of EK-FAC influence on the Gauss-Newton, fitting included.

    Each of ``b1_ekfac`` and ``b100_ekfac`` is one call (no warm-up) with a fresh solver, so that
    it fits the factors; ``ekfac_fit`` is the solver's own fitting time in the b100 call.
    """
    out, calcs = {}, {}
    for m in (1, M_MANY):
        solver = ci.EKFACSolver(fisher=args.ekfac_fisher, seed=args.seed, progress=False)
        calcs[m] = ci.InfluenceFunctions(model, train, solver=solver, curvature='gauss-newton',
                                         batch_size=args.batch_size, progress=False)
        out['b{}_ekfac'.format(m)] = best_time(lambda: calcs[m].influence(tests[m]), 1,
                                               warmup=False)
    calc = calcs[M_MANY]
    diagnostics = dict(calc.solver.diagnostics)
    out['ekfac_fit'] = diagnostics['fit_seconds']
    out['self_ekfac'] = best_time(calc.self_influence, 1, warmup=False)
    settings = {key: diagnostics.get(key) for key in (
        'fisher', 'damping', 'factor_bytes', 'fit_seconds', 'n_kronecker_blocks',
        'n_diagonal_params', 'eigenvalue_min', 'eigenvalue_max')}
    return out, settings
