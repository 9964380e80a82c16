"""The small problem that tests/test_distributed.py computes in one process and, through
tests/mpi_influence.py, in two: the same model, data, solvers and trainer on both sides."""
import numpy

import chainer
import chainer.links as L
from chainer import training

import chainer_influence as ci
from chainer_influence.retraining import fit_lbfgs

from digits_models import WEIGHT_DECAY, digits

LOSS = ci.softmax_cross_entropy_loss
# 61 examples: shards of 30 and 31, so with batches of 15 the ranks take 2 and 3 batches
N_TRAIN = 61
BATCH_SIZE = 15
TEST_INDICES = [0, 1, 2]
# the solvers compared between one and two processes (EK-FAC once kfac.py is there)
SOLVERS = ['exact', 'cg', 'lissa'] + (['ekfac'] if hasattr(ci, 'EKFACSolver') else [])


def problem():
    """(model, train, test): 3-class logistic regression (P = 192, float64) fitted on digits."""
    train, test = digits(N_TRAIN, 5, classes=[0, 1, 2])
    with chainer.using_config('dtype', numpy.float64):
        model = L.Linear(64, 3, nobias=True, initialW=chainer.initializers.Zero())
    gnorm = fit_lbfgs(model, LOSS, train, WEIGHT_DECAY)
    assert gnorm < 1e-8, gnorm
    return model, train, test


def make_solver(name, lissa_scale=None):
    """The solvers compared; LiSSA gets a fixed scale (2x the top eigenvalue) to keep it short."""
    if name == 'exact':
        return ci.ExactSolver()
    if name == 'cg':
        return ci.CGSolver(max_iter=200, tol=1e-8, progress=False)
    if name == 'lissa':
        return ci.LiSSASolver(depth=10, batch_size=8, scale=lissa_scale, seed=3, progress=False)
    if name == 'ekfac':  # sampled draws are keyed by global batch: the same with any process count
        return ci.EKFACSolver(fisher='sampled', seed=0, progress=False)
    raise ValueError(name)


class CountingDataset(chainer.dataset.DatasetMixin):
    """A dataset of tuples that counts the examples read from it."""

    def __init__(self, arrays):
        self.arrays = arrays
        self.count = 0

    def __len__(self):
        return len(self.arrays[0])

    def get_example(self, i):
        self.count += 1
        return tuple(a[i] for a in self.arrays)


def extension_trainer(out, comm=None):
    """A trainer whose optimizer leaves the fitted model as it is (lr = 0) and whose
    InfluenceExtension runs after one iteration; with ``comm``, a ChainerMN trainer."""
    model_link, (x, t), (xt, tt) = problem()
    model = L.Classifier(model_link)
    train = chainer.datasets.TupleDataset(x, t)
    test = chainer.datasets.TupleDataset(xt, tt)
    optimizer = chainer.optimizers.SGD(lr=0.0)
    local = train
    if comm is not None:
        import chainermn
        optimizer = chainermn.create_multi_node_optimizer(optimizer, comm)
        local = chainermn.scatter_dataset(train, comm, shuffle=True, seed=0)
    optimizer.setup(model)
    optimizer.add_hook(chainer.optimizer_hooks.WeightDecay(WEIGHT_DECAY))
    iterator = chainer.iterators.SerialIterator(local, 10)
    trainer = training.Trainer(training.updaters.StandardUpdater(iterator, optimizer),
                               (1, 'iteration'), out=out)
    trainer.extend(ci.InfluenceExtension(
        train, test, test_indices=TEST_INDICES, top_k=5, solver=ci.ExactSolver(),
        self_influence=True, batch_size=BATCH_SIZE, cache=False, progress=False))
    return trainer
