"""K-FAC and EK-FAC against brute-force expectations and the exact Gauss-Newton.

Brute force: for every example and every column r_c of the square root of its output Hessian
('exact' statistics), one backward of the outputs with output gradient r_c gives, at each layer,
the gradient of the layer output (u or w, per position) and every parameter's gradient; patches are
cut by explicit loops. The Kronecker factors, the diagonal blocks and the EK-FAC eigenvalues are
then plain averages of outer products.
"""
import numpy
import pytest

import chainer
import chainer.functions as F
import chainer.links as L

import chainer_influence as ci
from chainer_influence.curvature import Curvature
from chainer_influence import kfac_factors
from chainer_influence.kfac import symmetric_eigh
from chainer_influence.retraining import fit_lbfgs

from digits_models import TinyMLP, digits

LOSS = ci.softmax_cross_entropy_loss


class ConvNet(chainer.Chain):
    """conv 1->2 3x3 (bias) -> fixed BN -> tanh -> deconv 2->2 2x2 (bias) -> Scale+Bias -> tanh
    -> linear 32->3; keeps its intermediate Variables for the brute force."""

    def __init__(self):
        super().__init__()
        with self.init_scope():
            self.conv = L.Convolution2D(1, 2, 3)
            self.bn = L.BatchNormalization(2)
            self.deconv = L.Deconvolution2D(2, 2, 2)
            self.scale = L.Scale(axis=1, W_shape=(2,), bias_term=True)
            self.lin = L.Linear(32, 3)

    def forward(self, x):
        self.h_conv = self.conv(x)
        self.h_deconv_in = F.tanh(self.bn(self.h_conv))
        self.h_deconv = self.deconv(self.h_deconv_in)
        self.h_lin_in = F.reshape(F.tanh(self.scale(self.h_deconv)), (len(x), -1))
        self.h_lin = self.lin(self.h_lin_in)
        return self.h_lin


class EmbedNet(chainer.Chain):
    """EmbedID(7, 3) on 4 tokens (-1 ignored) -> tanh -> Linear 3->4 with n_batch_axes=2 -> sum."""

    def __init__(self):
        super().__init__()
        with self.init_scope():
            self.embed = L.EmbedID(7, 3, ignore_label=-1)
            self.lin = L.Linear(3, 4)

    def forward(self, ids):
        self.h_embed = self.embed(ids)
        self.h_lin_in = F.tanh(self.h_embed)
        self.h_lin = self.lin(self.h_lin_in, n_batch_axes=2)
        return F.sum(self.h_lin, axis=1)


def conv_problem(n=5):
    rng = numpy.random.RandomState(0)
    numpy.random.seed(0)  # Chainer's initializers
    with chainer.using_config('dtype', numpy.float64):
        model = ConvNet()
    x = rng.standard_normal((n, 1, 5, 5))
    model(x[:1])
    model.bn.avg_mean[...] = rng.standard_normal(2) * 0.1
    model.bn.avg_var[...] = rng.uniform(0.5, 2.0, 2)
    for p in (model.bn.gamma, model.bn.beta, model.deconv.b, model.scale.W, model.scale.bias.b):
        p.array[...] = rng.standard_normal(p.shape) * 0.5 + (1 if p is model.scale.W else 0)
    return model, (x, rng.randint(0, 3, n).astype(numpy.int32))


def embed_problem(n=6):
    rng = numpy.random.RandomState(1)
    numpy.random.seed(0)  # Chainer's initializers
    with chainer.using_config('dtype', numpy.float64):
        model = EmbedNet()
    ids = rng.randint(-1, 7, (n, 4)).astype(numpy.int32)
    model(ids[:1])
    return model, (ids, rng.randint(0, 4, n).astype(numpy.int32))


def with_one(a):
    return numpy.concatenate([a, numpy.ones(a.shape[:-1] + (1,))], axis=-1)


def layer_vectors(model, x):
    """Per layer: (u (T, rows), w (T, cols), activation_left) for one example, from the kept
    intermediates and their gradients (``.grad_var`` set by the brute-force backward)."""
    if isinstance(model, ConvNet):
        gc, xc = model.h_conv.grad[0], x[0, 0]
        patches = [with_one(xc[p:p + 3, q:q + 3].ravel()) for p in range(3) for q in range(3)]
        hd, gd = model.h_deconv_in.array[0], model.h_deconv.grad[0]
        return {
            '/conv/W': (gc.reshape(2, 9).T, numpy.array(patches), False),
            '/deconv/W': (hd.reshape(2, 9).T, numpy.array(
                [gd[:, i:i + 2, j:j + 2].ravel() for i in range(3) for j in range(3)]), True),
            '/lin/W': (model.h_lin.grad, with_one(model.h_lin_in.array), False)}
    ids = x[0]
    onehot = (ids[:, None] == numpy.arange(7)).astype(float)  # zero rows for -1
    used = (ids != -1)[:, None]  # an ignored position has u = 0 and does not count in w either
    return {'/embed/W': (onehot, model.h_embed.grad[0] * used, True),
            '/lin/W': (model.h_lin.grad[0], with_one(model.h_lin_in.array[0]), False)}


BLOCK_NAMES = {'/conv/W': ['/conv/W', '/conv/b'], '/deconv/W': ['/deconv/W'],
               '/lin/W': ['/lin/W', '/lin/b'], '/embed/W': ['/embed/W']}


def brute_force(model, batch):
    """Kronecker factors {weight: (L, R)}, per-example gradients {name: (N, C, size)}: exact
    statistics, one backward per example and output-Hessian column."""
    space = ci.ParameterSpace(model)
    n = len(batch[0])
    factors, grads = {}, {name: [] for name in space.names}
    for i in range(n):
        example = tuple(a[i:i + 1] for a in batch)
        with chainer.using_config('train', False):
            y = model(example[0])
        R = LOSS.output_hessian_sqrt(y.array, *example)
        per_c = {name: [] for name in space.names}
        for c in range(R.shape[2]):
            for h in (model.h_lin, model.h_lin_in) + ((model.h_conv, model.h_deconv)
                                                      if isinstance(model, ConvNet)
                                                      else (model.h_embed,)):
                h.grad_var = None
            model.cleargrads()
            y.grad = R[:, :, c].copy()
            y.backward(retain_grad=True)
            for name, p in zip(space.names, space.params):
                per_c[name].append(p.grad.ravel().copy())
            for weight, (u, w, activation_left) in layer_vectors(model, example[0]).items():
                Lf, Rf = factors.get(weight, (0, 0))
                T = len(u)
                Lf = Lf + (u.T.dot(u) / T if c == 0 or not activation_left else 0)
                Rf = Rf + (w.T.dot(w) if c == 0 or activation_left else 0)
                factors[weight] = (Lf, Rf)
        for name in space.names:
            grads[name].append(numpy.stack(per_c[name]))
    return ({k: (a / n, b / n) for k, (a, b) in factors.items()},
            {k: numpy.stack(v) for k, v in grads.items()})


def block_gradients(grads, names, rows):
    """(N, C, rows * cols) per-example gradients of a block in its (rows, cols) layout."""
    parts = [grads[name].reshape(grads[name].shape[:2] + (rows, -1)) for name in names]
    return numpy.concatenate(parts, axis=3).reshape(parts[0].shape[:2] + (-1,))


def dense_block(QL, QR, eigenvalues):
    Q = numpy.kron(numpy.eye(len(eigenvalues)) if QL is None else QL, QR)
    return (Q * eigenvalues.ravel()).dot(Q.T)


@pytest.mark.parametrize('make', [conv_problem, embed_problem])
def test_factors_and_eigenvalues_match_brute_force(make):
    model, batch = make()
    factors, grads = brute_force(model, batch)
    curvature = Curvature(model, LOSS, batch, batch_size=2)  # several batches
    kfac = ci.KFACSolver(fisher='exact', progress=False).fit(curvature)
    ekfac = ci.EKFACSolver(fisher='exact', progress=False).fit(curvature)
    seen = set()
    for (block, QL, QR, kfac_eig), (_, _, _, ekfac_eig) in zip(kfac._blocks, ekfac._blocks):
        seen.update(block.names)
        G = block_gradients(grads, block.names, block.rows)
        exact_block = numpy.einsum('ncp,ncq->pq', G, G) / len(G)  # the exact GGN block
        if not block.kronecker:  # diagonal parameters
            numpy.testing.assert_allclose(kfac_eig.ravel(), numpy.diag(exact_block),
                                          rtol=1e-10, atol=1e-14)
            continue
        assert block.names == BLOCK_NAMES[block.names[0]]
        Lf, Rf = factors[block.names[0]]
        want = numpy.kron(Lf, Rf)
        numpy.testing.assert_allclose(dense_block(QL, QR, kfac_eig), want,
                                      atol=1e-10 * numpy.abs(want).max())
        # EK-FAC: the exact second moments of the per-example gradients in the Kronecker basis
        Q = numpy.kron(numpy.eye(block.rows) if QL is None else QL, QR)
        numpy.testing.assert_allclose(ekfac_eig.ravel(), numpy.diag(Q.T.dot(exact_block).dot(Q)),
                                      atol=1e-10 * numpy.abs(exact_block).max())
        # ... hence the closest matrix diagonal in that basis: no farther than K-FAC's
        errors = [numpy.linalg.norm(dense_block(QL, QR, e) - exact_block)
                  for e in (ekfac_eig, kfac_eig)]
        assert errors[0] <= errors[1] * (1 + 1e-12), errors
    assert seen == set(curvature.space.names)


def test_kfac_is_exact_on_one_linear_layer_and_one_example():
    (x, t), _ = digits(1, 1)
    numpy.random.seed(0)  # Chainer's initializers
    with chainer.using_config('dtype', numpy.float64):
        model = L.Linear(64, 10)
    model(x)
    curvature = Curvature(model, LOSS, (x, t), weight_decay=0.01, curvature='gauss-newton')
    G = curvature.dense_matrix()
    V = numpy.random.RandomState(0).standard_normal((4, curvature.space.size))
    want = numpy.linalg.solve(G + 0.1 * numpy.eye(len(G)), V.T).T
    for solver in (ci.KFACSolver(fisher='exact', progress=False),
                   ci.EKFACSolver(fisher='exact', progress=False)):
        got = solver.solve(curvature, V, damping=0.1)
        assert numpy.abs(got - want).max() <= 1e-8 * numpy.abs(want).max()
        numpy.testing.assert_allclose(solver.quadratic_form(curvature, V, damping=0.1),
                                      (V * want).sum(axis=1), rtol=1e-8)


@pytest.fixture(scope='module')
def digits_mlp():
    """64-8-10 tanh MLP fitted on 300 digits, weight decay 1e-3, and the exact Gauss-Newton
    influence (damping 0.01) of 20 test points."""
    (x, t), test = digits(300, 20)
    numpy.random.seed(0)  # Chainer's initializers
    with chainer.using_config('dtype', numpy.float64):
        model = TinyMLP(64, 8, 10)
    model(x[:1])
    fit_lbfgs(model, LOSS, (x, t), 1e-3, gtol=1e-6, max_iter=300)
    calc = ci.InfluenceFunctions(model, (x, t), solver=ci.ExactSolver(), weight_decay=1e-3,
                                 damping=0.01, curvature='gauss-newton', progress=False)
    return model, (x, t), test, calc.influence(test)


def mean_pearson(a, b):
    return float(numpy.mean([numpy.corrcoef(u, v)[0, 1] for u, v in zip(a, b)]))


@pytest.mark.parametrize('fisher,floor', [('exact', 0.85), ('sampled', 0.65)])
def test_influence_close_to_exact_gauss_newton(digits_mlp, fisher, floor):
    model, train, test, reference = digits_mlp
    pearson = {}
    for solver in (ci.KFACSolver(fisher=fisher, progress=False),
                   ci.EKFACSolver(fisher=fisher, progress=False)):
        calc = ci.InfluenceFunctions(model, train, solver=solver, weight_decay=1e-3,
                                     damping=0.01, progress=False)
        pearson[solver.kind] = mean_pearson(calc.influence(test), reference)
    assert pearson['ekfac'] >= pearson['kfac'] >= floor, pearson


def test_s_test_and_self_influence_agree_with_dense_kfac(digits_mlp):
    model, train, test, _ = digits_mlp
    solver = ci.EKFACSolver(progress=False)
    calc = ci.InfluenceFunctions(model, train, solver=solver, weight_decay=1e-3,
                                 damping=0.01, batch_size=128, progress=False)
    many = calc.s_test(test)
    one = calc.s_test((test[0][3:4], test[1][3:4]))
    numpy.testing.assert_allclose(one[0], many[3], rtol=1e-12, atol=1e-14)
    # dense (G_ekfac + (wd + damping) I)^-1 from the blocks, independently of solve()
    space = calc.space
    dense = numpy.zeros((space.size, space.size))
    for block, QL, QR, eigenvalues in solver._blocks:
        idx = numpy.concatenate([numpy.arange(space.size).reshape(1, -1)[
            :, space.slice(name)].reshape(block.rows, -1) for name in block.names], axis=1)
        dense[numpy.ix_(idx.ravel(), idx.ravel())] = dense_block(QL, QR, eigenvalues)
    inverse = numpy.linalg.inv(dense + (1e-3 + 0.01) * numpy.eye(space.size))
    g_test = ci.per_sample_gradients(model, LOSS, test, flat=True)
    numpy.testing.assert_allclose(many, g_test.dot(inverse), rtol=1e-8, atol=1e-12)
    G = ci.per_sample_gradients(model, LOSS, train, flat=True)
    numpy.testing.assert_allclose(calc.self_influence(), (G.dot(inverse) * G).sum(axis=1),
                                  rtol=1e-8)


def test_rank_deficient_factors_do_not_crash():
    (x, t), _ = digits(3, 1)  # 3 examples, 65-dim inputs (some pixels always 0): rank <= 3
    numpy.random.seed(0)  # Chainer's initializers
    with chainer.using_config('dtype', numpy.float64):
        model = TinyMLP(64, 5, 10)
    model(x[:1])
    for solver in (ci.KFACSolver(progress=False), ci.EKFACSolver(fisher='exact', progress=False)):
        calc = ci.InfluenceFunctions(model, (x, t), solver=solver, progress=False)
        scores = calc.influence((x[:2], t[:2]))
        assert numpy.isfinite(scores).all() and calc.damping > 0
        assert solver.eigenvalues(calc.curvature).min() >= 0
    with pytest.raises(ci.NotPositiveDefiniteError, match='damping > 0'):
        ci.KFACSolver(progress=False).solve(calc.curvature, numpy.ones(calc.space.size), 0.0)
    M = numpy.outer([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) + 1e-17 * numpy.array(
        [[0, 1, 0], [0, 0, 0], [0, 0, 0]])  # rank one, asymmetric rounding
    w, Q = symmetric_eigh(M)
    assert (w >= 0).all() and abs(w[-1] - 14) < 1e-12
    numpy.testing.assert_allclose((Q * w).dot(Q.T), (M + M.T) / 2, atol=1e-12)


def test_sampled_statistics_are_deterministic_for_a_seed():
    model, batch = conv_problem()
    curvature = Curvature(model, LOSS, batch, batch_size=2)

    def eigenvalues(seed):
        return ci.EKFACSolver(seed=seed, progress=False).eigenvalues(curvature)

    numpy.testing.assert_array_equal(eigenvalues(0), eigenvalues(0))
    assert not numpy.array_equal(eigenvalues(0), eigenvalues(1))


def test_factors_are_cached_and_reused(digits_mlp, tmp_path, monkeypatch):
    model, train, test, _ = digits_mlp

    def calc():
        return ci.InfluenceFunctions(model, train, solver=ci.EKFACSolver(progress=False),
                                     weight_decay=1e-3, cache_dir=str(tmp_path), progress=False)

    first = calc()
    want = first.influence(test)
    monkeypatch.setattr(ci.EKFACSolver, '_fit', lambda *a: pytest.fail('factors refitted'))
    second = calc()
    numpy.testing.assert_allclose(second.s_test(test), first.s_test(test), rtol=1e-12)
    assert second.damping == first.damping > 0
    numpy.testing.assert_allclose(second.influence((test[0][:3], test[1][:3])), want[:3],
                                  rtol=1e-10)


def test_default_solver_and_damping(digits_mlp, capsys):
    model, train, test, _ = digits_mlp
    calc = ci.InfluenceFunctions(model, train, weight_decay=1e-3)
    choice = calc.solver_choice
    assert (choice['solver'], choice['curvature']) == ('EKFACSolver', 'gauss-newton')
    assert 'not affine' in choice['reason'] and choice['damping'] > 0
    assert choice['damping_rule'] == 'EKFACSolver.default_damping'
    assert numpy.isfinite(calc.influence(test)).all()
    assert numpy.isfinite(calc.self_influence()).all()
    err = capsys.readouterr().err
    assert 'EKFACSolver on the gauss-newton' in err and 'damping=None: using' in err
    # a linear model (convex): exact on the Hessian, no damping
    (x, t), _ = digits(100, 1)
    numpy.random.seed(0)  # Chainer's initializers
    with chainer.using_config('dtype', numpy.float64):
        linear = L.Linear(64, 10)
    linear(x[:1])
    calc = ci.InfluenceFunctions(linear, (x, t), weight_decay=1e-2, progress=False)
    assert (calc.solver_choice['solver'], calc.solver_choice['curvature'],
            calc.damping) == ('ExactSolver', 'hessian', 0.0)
    # only the last layer tracked: outputs affine in it, exact on the Hessian
    last = ci.InfluenceFunctions(model, train, params=['/l2/W', '/l2/b'], progress=False)
    assert last.solver_choice['solver'] == 'ExactSolver'
    assert last.damping > 0  # no weight decay: the softmax Hessian is singular
    # an explicit damping of 0 is kept
    assert ci.InfluenceFunctions(model, train, solver=ci.EKFACSolver(), damping=0.0,
                                 weight_decay=1e-3, progress=False).damping == 0.0


def test_kfac_needs_the_output_protocol(digits_mlp):
    model, train, test, _ = digits_mlp

    def hinge(model, x, t):
        return ci.softmax_cross_entropy_loss(model, x, t)

    calc = ci.InfluenceFunctions(model, train, loss_fn=hinge, solver=ci.KFACSolver(),
                                 damping=0.1, progress=False)
    with pytest.raises(ci.MissingOutputHessianError, match='KFACSolver needs the Hessian'):
        calc.s_test(test)


def test_per_parameter_weight_decay():
    """A dict of equal rates is the float; different rates enter each block's eigenbasis as the
    diagonal of diag(rates) there (exact for a block with one rate)."""
    (x, t), _ = digits(1, 1)
    numpy.random.seed(0)
    with chainer.using_config('dtype', numpy.float64):
        model = L.Linear(64, 10)
    model(x)
    V = numpy.random.RandomState(0).standard_normal((2, 650))

    def solve(weight_decay):
        curvature = Curvature(model, LOSS, (x, t), weight_decay=weight_decay,
                              curvature='gauss-newton')
        solver = ci.KFACSolver(fisher='exact', progress=False)
        return solver.solve(curvature, V, 0.1), curvature, solver

    same = solve({'/W': 0.01, '/b': 0.01})[0]
    numpy.testing.assert_allclose(same, solve(0.01)[0], rtol=1e-12)
    got, curvature, solver = solve({'/W': 0.01})  # the bias column is not decayed
    assert numpy.abs(got - same).max() > 1e-3 * numpy.abs(same).max()
    (block, QL, QR, eigenvalues), = solver._blocks
    Q = numpy.kron(QL, QR)
    rates = numpy.concatenate([numpy.full((10, 64), 0.01), numpy.zeros((10, 1))], axis=1)
    want = eigenvalues.ravel() + numpy.diag((Q.T * rates.ravel()).dot(Q)) + 0.1
    numpy.testing.assert_allclose(solver._denominators(curvature, 0.1)[0].ravel(), want,
                                  rtol=1e-12)


class SharedNet(chainer.Chain):
    """One Linear 4->4 (with bias) applied twice, then Linear 4->3: a weight with two uses."""

    def __init__(self):
        super().__init__()
        with self.init_scope():
            self.shared = L.Linear(4, 4)
            self.out = L.Linear(4, 3)

    def forward(self, x):
        return self.out(F.tanh(self.shared(F.tanh(self.shared(x)))))


def shared_problem(n=7):
    rng = numpy.random.RandomState(2)
    numpy.random.seed(0)  # Chainer's initializers
    with chainer.using_config('dtype', numpy.float64):
        model = SharedNet()
    x = rng.standard_normal((n, 4))
    model(x[:1])
    return model, (x, rng.randint(0, 3, n).astype(numpy.int32))


@pytest.mark.parametrize('chunk_bytes', [None, 1])  # 1: one example per chunk
@pytest.mark.parametrize('make', [conv_problem, embed_problem, shared_problem])
@pytest.mark.parametrize('solver_class', [ci.KFACSolver, ci.EKFACSolver])
def test_one_pass_self_influence_equals_the_quadratic_form_of_gradients(
        make, solver_class, chunk_bytes, monkeypatch):
    """self_influence (quadratic_form_hook: no per-example gradients) == quadratic_form on the
    per-example gradients, with folded and unfolded biases, BN/Scale/Bias, EmbedID, conv, deconv,
    n_batch_axes=2, a shared weight and per-parameter weight decay; the EK-FAC eigenvalues do not
    depend on the chunking."""
    if chunk_bytes is not None:
        monkeypatch.setattr(kfac_factors, 'CHUNK_BYTES', chunk_bytes)
    model, batch = make()
    space = ci.ParameterSpace(model)
    decay = {name: 1e-3 * (i + 1) for i, name in enumerate(space.names) if i % 3}
    calc = ci.InfluenceFunctions(model, batch, solver=solver_class(fisher='exact', progress=False),
                                 weight_decay=decay, damping=0.05, batch_size=3, progress=False)
    got = calc.self_influence()
    with chainer.using_config('train', False):
        G = ci.per_sample_gradients(model, LOSS, batch, flat=True)
    want = calc.solver.quadratic_form(calc.curvature, G, damping=0.05)
    numpy.testing.assert_allclose(got, want, rtol=1e-10)
    assert (want > 0).all()
    if chunk_bytes is not None:  # the EK-FAC eigenvalues, fitted in chunks of one example
        monkeypatch.setattr(kfac_factors, 'CHUNK_BYTES', 64 * 2 ** 20)
        reference = solver_class(fisher='exact', progress=False).eigenvalues(calc.curvature)
        numpy.testing.assert_allclose(calc.solver.eigenvalues(calc.curvature), reference,
                                      rtol=1e-10, atol=1e-14 * reference.max())
