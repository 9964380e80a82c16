"""The default solver and curvature for ``InfluenceFunctions(solver=None)``, and why.

Exact for small P, CG for moderate N, LiSSA for large N on the Hessian; EK-FAC on the
Gauss-Newton for a network whose loss has the output-Hessian protocol (see :func:`choose_solver`).
"""
from chainer_influence import solvers as solvers_module
from chainer_influence.kfac import EKFACSolver

EXACT_MAX_PARAMS = 2000      # default solver: Exact up to this many tracked parameters,
CG_MAX_TRAIN = 20000         # CG up to this many training examples, LiSSA beyond.


def default_solver(n_params, n_train):
    """Exact for small P, CG for moderate N, LiSSA for large N (on the Hessian of a loss without
    the output-Hessian protocol)."""
    if n_params <= EXACT_MAX_PARAMS:
        return solvers_module.ExactSolver()
    if n_train <= CG_MAX_TRAIN:
        return solvers_module.CGSolver()
    return solvers_module.LiSSASolver()


def choose_solver(curvature, requested):
    """(solver, curvature kind, reason) for ``solver=None``; ``curvature`` is a Hessian
    :class:`Curvature` of the problem, ``requested`` the user's ``curvature`` argument or None.

    * the loss has no output-Hessian protocol: :func:`default_solver` on the Hessian;
    * P <= ``EXACT_MAX_PARAMS``: ``ExactSolver`` on the Hessian when the outputs are affine in the
      tracked parameters (``Curvature.is_psd``: e.g. a linear model or the last layer; the Hessian
      is then the Gauss-Newton, PSD) unless 'gauss-newton' was asked; on the Gauss-Newton when
      'gauss-newton' was asked;
    * otherwise ``EKFACSolver()`` on the Gauss-Newton, unless 'hessian' was asked (then
      :func:`default_solver` on the Hessian, which may need damping on a non-convex network).
    """
    P, N = curvature.space.size, curvature.n_train
    size = 'P={} parameters, N={} training examples'.format(P, N)
    if not callable(getattr(curvature.loss_fn, 'output_hessian_sqrt', None)):
        solver = default_solver(P, N)
        return solver, 'hessian', ('{}; the loss has no output-Hessian protocol (ci.OutputLoss), '
                                   'so Gauss-Newton and EK-FAC are unavailable'.format(size))
    small = P <= EXACT_MAX_PARAMS
    if small and requested != 'gauss-newton' and curvature.is_psd():
        return solvers_module.ExactSolver(), 'hessian', (
            '{} <= {} and the outputs are affine in the tracked parameters (the Hessian equals '
            'the Gauss-Newton: convex)'.format(size, EXACT_MAX_PARAMS))
    if small and requested == 'gauss-newton':
        return solvers_module.ExactSolver(), 'gauss-newton', '{} <= {}'.format(
            size, EXACT_MAX_PARAMS)
    if requested == 'hessian':
        return default_solver(P, N), 'hessian', (
            '{}; curvature=\'hessian\' was asked on a model that is not convex in its tracked '
            'parameters (or large): the Hessian may be indefinite'.format(size))
    return EKFACSolver(), 'gauss-newton', (
        '{}; {}: EK-FAC on the Gauss-Newton (positive semi-definite)'.format(
            size, 'more than {} parameters'.format(EXACT_MAX_PARAMS) if not small else
            'the outputs are not affine in the tracked parameters (non-convex)'))
