"""Small models fitted on scikit-learn's bundled digits (real data, offline), shared by tests."""
import numpy

import chainer
import chainer.functions as F
import chainer.links as L
from sklearn.datasets import load_digits

from chainer_influence.retraining import fit_lbfgs
import chainer_influence as ci

WEIGHT_DECAY = 0.01


def digits(n_train=500, n_test=50, dtype=numpy.float64, classes=None):
    """(x_train, t_train), (x_test, t_test): pixels in [0, 1], a fixed split."""
    data = load_digits()
    x = (data.data / 16.0).astype(dtype)
    t = data.target.astype(numpy.int32)
    if classes is not None:
        keep = numpy.isin(t, classes)
        x, t = x[keep], numpy.searchsorted(classes, t[keep]).astype(numpy.int32)
    order = numpy.random.RandomState(0).permutation(len(x))
    x, t = x[order], t[order]
    return (x[:n_train], t[:n_train]), (x[n_train:n_train + n_test], t[n_train:n_train + n_test])


def fitted_logreg(n_train=500, n_test=50):
    """10-class logistic regression without bias, weight_decay 0.01, fitted to convergence."""
    train, test = digits(n_train, n_test)
    with chainer.using_config('dtype', numpy.float64):
        model = L.Linear(64, 10, nobias=True, initialW=chainer.initializers.Zero())
    gnorm = fit_lbfgs(model, ci.softmax_cross_entropy_loss, train, WEIGHT_DECAY)
    assert gnorm < 1e-8, gnorm
    return model, train, test


class TinyMLP(chainer.Chain):
    def __init__(self, n_in=64, n_hidden=8, n_out=10):
        super().__init__()
        with self.init_scope():
            self.l1 = L.Linear(n_in, n_hidden)
            self.l2 = L.Linear(n_hidden, n_out)

    def forward(self, x):
        return self.l2(F.tanh(self.l1(x)))


class SumOfEmbeddings(chainer.Chain):
    """Token ids (B, 3) in [0, 5) -> 2 logits: the sum of their embeddings (integer inputs)."""

    def __init__(self):
        super().__init__()
        with self.init_scope():
            self.e = L.EmbedID(5, 2)

    def forward(self, x):
        return F.sum(self.e(x), axis=1)


def token_problem(n=20):
    """(x, t): n examples of 3 token ids in [0, 5) and binary labels."""
    x = numpy.random.RandomState(0).randint(0, 5, size=(n, 3)).astype(numpy.int32)
    return x, numpy.arange(n, dtype=numpy.int32) % 2


def fitted_mlp(n_train=200, n_test=3, max_iter=200):
    """(TinyMLP in float64 fitted by L-BFGS with WEIGHT_DECAY, train, first n_test test points)."""
    train, test = digits(n_train, n_test)
    with chainer.using_config('dtype', numpy.float64):
        model = TinyMLP()
    fit_lbfgs(model, ci.softmax_cross_entropy_loss, train, WEIGHT_DECAY, max_iter=max_iter)
    return model, train, test
