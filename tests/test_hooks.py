"""Per-example gradients against one backward pass per example."""
import warnings

import numpy
import pytest

import chainer
import chainer.functions as F
import chainer.links as L

import chainer_influence as ci

RTOL = 1e-5


class MLP(chainer.Chain):
    def __init__(self):
        super().__init__()
        with self.init_scope():
            self.l1 = L.Linear(12, 7)
            self.l2 = L.Linear(7, 4)

    def forward(self, x):
        return self.l2(F.tanh(self.l1(x)))


class CNN(chainer.Chain):
    """Stride, padding, dilation and groups."""

    def __init__(self):
        super().__init__()
        with self.init_scope():
            self.c1 = L.Convolution2D(2, 4, ksize=3, stride=2, pad=1)
            self.c2 = L.Convolution2D(4, 6, ksize=3, pad=2, dilate=2, groups=2)
            self.fc = L.Linear(None, 3)

    def forward(self, x):
        return self.fc(F.relu(self.c2(F.relu(self.c1(x)))))


class BNCNN(chainer.Chain):
    def __init__(self):
        super().__init__()
        with self.init_scope():
            self.c1 = L.Convolution2D(2, 4, ksize=3)
            self.bn = L.BatchNormalization(4)
            self.scale = L.Scale(axis=1, W_shape=(4,), bias_term=True)
            self.fc = L.Linear(None, 3)

    def forward(self, x):
        return self.fc(F.relu(self.scale(self.bn(self.c1(x)))))


class Deconv(chainer.Chain):
    """A deconvolution as the first layer (Chainer's backward crashes there without a fix)."""

    def __init__(self):
        super().__init__()
        with self.init_scope():
            self.d1 = L.Deconvolution2D(2, 4, ksize=3, stride=2, pad=1)
            self.d2 = L.Deconvolution2D(4, 4, ksize=2, groups=2)
            self.fc = L.Linear(None, 3)

    def forward(self, x):
        return self.fc(F.relu(self.d2(F.relu(self.d1(x)))))


class TextClassifier(chainer.Chain):
    """EmbedID with ignore_label, averaged over tokens, then a Linear over (B, T) batch axes."""

    def __init__(self):
        super().__init__()
        with self.init_scope():
            self.embed = L.EmbedID(11, 5, ignore_label=-1)
            self.proj = L.Linear(5, 5)
            self.out = L.Linear(5, 3)

    def forward(self, x):
        h = F.tanh(self.proj(self.embed(x), n_batch_axes=2))
        return self.out(F.mean(h, axis=1))


class SharedLinear(chainer.Chain):
    """One Linear called twice in one forward pass."""

    def __init__(self):
        super().__init__()
        with self.init_scope():
            self.l1 = L.Linear(6, 6)
            self.out = L.Linear(6, 3)

    def forward(self, x):
        return self.out(F.tanh(self.l1(F.tanh(self.l1(x)))))


class Bilinear(chainer.Chain):
    """L.Bilinear has no vectorised rule: exercises the fallback."""

    def __init__(self):
        super().__init__()
        with self.init_scope():
            self.bl = L.Bilinear(4, 4, 3)

    def forward(self, x):
        return self.bl(x[:, :4], x[:, 4:])


def _data(shape, n_class, seed, B=5):
    rng = numpy.random.RandomState(seed)
    x = rng.randn(B, *shape).astype(numpy.float32)
    t = rng.randint(0, n_class, size=B).astype(numpy.int32)
    return x, t


def _tokens(B=5):
    rng = numpy.random.RandomState(3)
    x = rng.randint(0, 11, size=(B, 6)).astype(numpy.int32)
    x[:, 4:] = -1  # padding
    x[0, 0] = -1
    return x, rng.randint(0, 3, size=B).astype(numpy.int32)


CASES = {
    'mlp': (MLP, lambda: _data((12,), 4, 0)),
    'cnn': (CNN, lambda: _data((2, 9, 9), 3, 1)),
    'bn_cnn': (BNCNN, lambda: _data((2, 6, 6), 3, 2)),
    'deconv': (Deconv, lambda: _data((2, 4, 4), 3, 4)),
    'embed': (TextClassifier, _tokens),
    'shared': (SharedLinear, lambda: _data((6,), 3, 5)),
    'fallback': (Bilinear, lambda: _data((8,), 3, 6)),
}


def _model(name):
    cls, data = CASES[name]
    model = cls()
    x, t = data()
    with chainer.using_config('train', False):
        model(x)  # initialise lazy parameters
    if name == 'bn_cnn':  # non-trivial running statistics
        rng = numpy.random.RandomState(0)
        model.bn.avg_mean[...] = rng.randn(4)
        model.bn.avg_var[...] = rng.rand(4) + 0.5
        model.bn.gamma.array[...] = rng.rand(4) + 0.5
    return model, (x, t)


def _loop_gradients(model, x, t):
    """One backward pass per example: the independent reference."""
    out = {}
    for b in range(len(x)):
        model.cleargrads()
        xb = x[b:b + 1]
        if xb.dtype.kind == 'f':  # an input that needs a gradient avoids Chainer's deconv crash
            xb = chainer.Variable(xb)
        loss = ci.softmax_cross_entropy_loss(model, xb, t[b:b + 1])
        F.sum(loss).backward()
        for name, p in model.namedparams():
            out.setdefault(name, []).append(p.grad.copy())
    return {name: numpy.stack(gs) for name, gs in out.items()}


def _relerr(a, b):
    return float(numpy.abs(a - b).max() / max(numpy.abs(b).max(), 1e-12))


@pytest.mark.parametrize('name', sorted(CASES))
def test_per_example_gradients_match_loop(name):
    model, (x, t) = _model(name)
    with chainer.using_config('train', False), warnings.catch_warnings():
        warnings.simplefilter('ignore', ci.FallbackWarning)
        got = ci.per_sample_gradients(model, ci.softmax_cross_entropy_loss, (x, t))
        want = _loop_gradients(model, x, t)
    assert sorted(got) == sorted(want)
    for key in want:
        assert got[key].shape == want[key].shape
        assert _relerr(got[key], want[key]) < RTOL, key


@pytest.mark.parametrize('name', sorted(CASES))
def test_contract_mode_equals_flat_gradients_times_V(name):
    model, (x, t) = _model(name)
    with chainer.using_config('train', False), warnings.catch_warnings():
        warnings.simplefilter('ignore', ci.FallbackWarning)
        flat = ci.per_sample_gradients(model, ci.softmax_cross_entropy_loss, (x, t), flat=True)
        hook = ci.PerSampleGradientHook(model)
        V = numpy.random.RandomState(9).randn(3, flat.shape[1]).astype(numpy.float32)
        hook.contract_with(V)
        with hook:
            hook.backward(ci.softmax_cross_entropy_loss(model, x, t))
    want = flat.astype(numpy.float64) @ V.T.astype(numpy.float64)
    assert hook.contractions.shape == (len(x), 3)
    assert _relerr(hook.contractions, want) < RTOL


def test_flat_layout_follows_namedparams():
    model, (x, t) = _model('mlp')
    grads = ci.per_sample_gradients(model, ci.softmax_cross_entropy_loss, (x, t))
    flat = ci.per_sample_gradients(model, ci.softmax_cross_entropy_loss, (x, t), flat=True)
    names = [name for name, _ in model.namedparams()]
    manual = numpy.concatenate([grads[n].reshape(len(x), -1) for n in names], axis=1)
    numpy.testing.assert_array_equal(flat, manual)


def test_params_subset_and_classifier():
    model, (x, t) = _model('mlp')
    clf = L.Classifier(model)
    got = ci.per_sample_gradients(clf, ci.softmax_cross_entropy_loss, (x, t),
                                  params=['/l2/W', '/l2/b'])
    assert sorted(got) == ['/l2/W', '/l2/b']
    want = _loop_gradients(model, x, t)
    for key in got:
        assert _relerr(got[key], want[key]) < RTOL


def test_unknown_param_name_is_a_clear_error():
    model, _ = _model('mlp')
    with pytest.raises(ValueError, match='unknown parameter names'):
        ci.PerSampleGradientHook(model, params=['/nope/W'])


def test_batchnorm_in_train_mode_raises():
    model, (x, t) = _model('bn_cnn')
    with chainer.using_config('train', True):
        with pytest.raises(ci.BatchCouplingError, match="using_config\\('train', False\\)"):
            ci.per_sample_gradients(model, ci.softmax_cross_entropy_loss, (x, t))


def test_fallback_warns_once_naming_the_function():
    model, (x, t) = _model('fallback')
    with pytest.warns(ci.FallbackWarning, match='BilinearFunction') as record:
        ci.per_sample_gradients(model, ci.softmax_cross_entropy_loss, (x, t))
    assert len([w for w in record if issubclass(w.category, ci.FallbackWarning)]) == 1


def test_scalar_loss_is_rejected():
    model, (x, t) = _model('mlp')

    def mean_loss(model, x, t):
        return F.softmax_cross_entropy(model(x), t)

    with pytest.raises(ValueError, match='per-example losses of shape'):
        ci.per_sample_gradients(model, mean_loss, (x, t))


def test_model_gradients_are_untouched():
    model, (x, t) = _model('mlp')
    model.cleargrads()
    ci.per_sample_gradients(model, ci.softmax_cross_entropy_loss, (x, t))
    assert all(p.grad is None for p in model.params())
