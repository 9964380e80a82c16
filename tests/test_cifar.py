"""The CIFAR-10 example: per-example gradients and Hessian-vector products of its ResNet and
VGG; the script end to end on tiny fake CIFAR-10 python batches (loader, both influence scopes,
comparison, colour figures) with EK-FAC on all parameters and no damping given; the one-line
``InfluenceExtension`` on the ResNet; the message without data; the comparison of two reports."""
import json
import os
import pickle
import subprocess
import sys
import warnings

import numpy
import pytest

import chainer
import chainer.links as L

import chainer_influence as ci

from test_hooks import _loop_gradients, _relerr, RTOL

EXAMPLE_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', 'examples', 'cifar'))
sys.path.insert(0, EXAMPLE_DIR)
import cifar_models  # NOQA: E402
import compare_influence  # NOQA: E402
import train_cifar  # NOQA: E402

PNG = b'\x89PNG\r\n\x1a\n'
RED, BLUE = (255, 0, 0), (0, 0, 255)


# ---- models: per-example gradients -----------------------------------------------------
def _tiny(arch):
    """A tiny model in eval mode with non-trivial BatchNormalization statistics."""
    model = (cifar_models.ResNet(width=8, n_blocks=1) if arch == 'resnet'
             else cifar_models.VGG(width=4, n_hidden=8))
    rng = numpy.random.RandomState(1)
    for link in model.links():
        if isinstance(link, L.BatchNormalization):
            n = link.avg_mean.shape[0]
            link.avg_mean[...] = rng.randn(n) * 0.1
            link.avg_var[...] = rng.rand(n) + 0.5
            link.gamma.array[...] = rng.rand(n) + 0.5
            link.beta.array[...] = rng.randn(n) * 0.1
    x = rng.rand(4, 3, 32, 32).astype(numpy.float32)
    t = rng.randint(0, 10, size=4).astype(numpy.int32)
    return model, x, t


@pytest.mark.parametrize('arch', sorted(cifar_models.ARCHS))
def test_per_example_gradients_match_loop_without_fallback(arch):
    model, x, t = _tiny(arch)
    with chainer.using_config('train', False), warnings.catch_warnings():
        warnings.simplefilter('error', ci.FallbackWarning)  # every function has a rule
        got = ci.per_sample_gradients(model, ci.softmax_cross_entropy_loss, (x, t))
        want = _loop_gradients(model, x, t)
    assert sorted(got) == sorted(name for name, _ in model.namedparams())
    for name in want:
        assert got[name].shape == want[name].shape
        assert _relerr(got[name], want[name]) < RTOL, name


@pytest.mark.parametrize('arch', sorted(cifar_models.ARCHS))
def test_hessian_vector_products_match_finite_differences(arch):
    """Double backprop through FixedBatchNormalization, residual sums, pooling: float64 HVPs
    against central differences of the gradient (a small step, so no ReLU changes side)."""
    with chainer.using_config('dtype', numpy.float64):
        model, x, t = _tiny(arch)
    x = x.astype(numpy.float64)
    curvature = ci.Curvature(model, ci.softmax_cross_entropy_loss, (x, t), weight_decay=1e-3)
    space = curvature.space
    v = numpy.random.RandomState(2).randn(space.size)

    def gradient(theta):
        space.set_values(theta)
        with chainer.using_config('train', False):
            loss = chainer.functions.mean(ci.softmax_cross_entropy_loss(model, x, t))
            grads = chainer.grad([loss], space.params)
        return space.flatten([g.array for g in grads]) + 1e-3 * theta

    theta, eps = space.values().copy(), 1e-7
    want = (gradient(theta + eps * v) - gradient(theta - eps * v)) / (2 * eps)
    space.set_values(theta)
    assert _relerr(curvature.hvp(v), want) < 1e-6


def test_last_layer_is_fc():
    model, _, _ = _tiny('resnet')
    params = dict(model.namedparams())
    assert params['/fc/W'].shape == (10, 32) and params['/fc/b'].shape == (10,)
    assert set(cifar_models.LAST_LAYER) <= set(params)


# ---- the script on fake CIFAR-10 batches ------------------------------------------------
def write_fake_cifar10(folder, n_per_batch=4, n_test=8, seed=0):
    """CIFAR-10's python batches with random pixels, a red top-right and a blue bottom-left
    quadrant in every image."""
    rng = numpy.random.RandomState(seed)
    names = ['data_batch_{}'.format(i) for i in range(1, 6)] + ['test_batch']
    for name in names:
        n = n_test if name == 'test_batch' else n_per_batch
        images = rng.randint(0, 256, size=(n, 3, 32, 32)).astype(numpy.uint8)
        images[:, :, :16, 16:] = numpy.reshape(RED, (3, 1, 1))
        images[:, :, 16:, :16] = numpy.reshape(BLUE, (3, 1, 1))
        batch = {b'data': images.reshape(n, -1), b'labels': rng.randint(0, 10, n).tolist()}
        with open(os.path.join(folder, name), 'wb') as f:
            pickle.dump(batch, f)


@pytest.fixture(scope='module')
def result(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp('cifar-10-batches-py')
    write_fake_cifar10(str(data_dir))
    out = str(tmp_path_factory.mktemp('result'))
    train_cifar.main([  # all parameters: the defaults, EK-FAC on the Gauss-Newton, no damping
        '--data-dir', str(data_dir), '--arch', 'resnet', '--width', '4', '--epoch', '1',
        '--batchsize', '10', '--influence-params', 'both', '--test-indices', '0', '3',
        '--top-k', '3', '--no-progress', '--out', out])
    return out


def _json(*path):
    with open(os.path.join(*path)) as f:
        return json.load(f)


@pytest.mark.parametrize('scope,solver,curvature', [('last', 'ExactSolver', 'hessian'),
                                                     ('all', 'EKFACSolver', 'gauss-newton')])
def test_rankings_per_scope(result, scope, solver, curvature):
    doc = _json(result, 'influence_' + scope, 'rankings.json')
    assert [p['test_index'] for p in doc['test_points']] == [0, 3]
    assert all(len(p['helpful']) == 3 and len(p['harmful']) == 3 for p in doc['test_points'])
    assert doc['settings']['solver'] == solver
    assert doc['settings']['curvature'] == curvature
    assert doc['settings']['damping'] > 0  # all: EK-FAC's default rule, none given
    arrays = numpy.load(os.path.join(result, 'influence_' + scope, 'influence.npz'))
    assert arrays['scores'].shape == (2, 20) and numpy.isfinite(arrays['scores']).all()
    assert (arrays['self_influence'] > 0).all()  # all parameters too: EK-FAC, one pass
    assert doc['settings']['n_train'] == 20
    assert doc['test_points'][0]['label_name'] in ci.CLASS_NAMES['cifar10']
    n_params = sum(p.size for p in cifar_models.ResNet(width=4).params())
    assert doc['settings']['n_params'] == (10 * (16 + 1) if scope == 'last' else n_params)


def test_log_keeps_both_scopes_apart(result):
    last = _json(result, 'log')[-1]
    for key in ('influence_last/time', 'influence_all/time', 'influence_all/solver/fit_seconds',
                'influence_last/solver/eigenvalue_min'):
        assert key in last, key
    assert last['influence_last/n_train'] == last['influence_all/n_train'] == 20


def test_comparison_matches_the_rankings(result):
    comparison = _json(result, 'influence_comparison.json')
    assert comparison['names'] == ['last', 'all'] and comparison['top_k'] == 3
    rankings = {scope: _json(result, 'influence_' + scope, 'rankings.json')
                for scope in ('last', 'all')}
    for m, point in enumerate(comparison['test_points']):
        for kind in ('helpful', 'harmful'):
            sets = [{e['train_index'] for e in rankings[s]['test_points'][m][kind]}
                    for s in ('last', 'all')]
            assert set(point[kind + '_shared']) == sets[0] & sets[1]
            assert point[kind + '_overlap'] == pytest.approx(len(sets[0] & sets[1]) / 3)
        assert -1 <= point['spearman'] <= 1
    assert comparison['settings']['all']['damping'] == rankings['all']['settings']['damping']


def _where(image, colour):
    """(rows, columns) of the pixels of an RGB(A) image in [0, 1] within 15/255 of ``colour``."""
    return numpy.nonzero((numpy.abs(image[..., :3] * 255 - colour) < 15).all(axis=-1))


@pytest.mark.parametrize('scope', ['last', 'all'])
def test_figures_are_colour_images(result, scope):
    from matplotlib import image as mpimg
    path = os.path.join(result, 'influence_' + scope, 'top_influential.png')
    with open(path, 'rb') as f:
        assert f.read(8) == PNG
    pixels = mpimg.imread(path)
    # 2 rows x 7 images, each with a red and a blue quadrant, shown as (32, 32, 3) colour images
    # the right way round: red above and right of blue
    (red_y, red_x), (blue_y, blue_x) = _where(pixels, RED), _where(pixels, BLUE)
    assert len(red_y) > 14 * 100 and len(blue_y) > 14 * 100
    assert red_y.mean() < blue_y.mean() and red_x.mean() > blue_x.mean()
    with open(os.path.join(result, 'influence_' + scope, 'self_influence.png'), 'rb') as f:
        assert f.read(8) == PNG  # all parameters too: EK-FAC's self-influence is one pass


# ---- the one-line extension on the ResNet ----------------------------------------------------
def test_one_line_extension_on_the_resnet_needs_no_damping(tmp_path):
    """``trainer.extend(ci.InfluenceExtension(train, test))`` after training a ResNet (BatchNorm,
    residual sums, all 1,000+ parameters, an indefinite Hessian) with weight decay: the default
    solver and damping work and say what they chose."""
    numpy.random.seed(0)
    rng = numpy.random.RandomState(0)
    x = rng.rand(30, 3, 32, 32).astype(numpy.float32)
    t = rng.randint(0, 10, 30).astype(numpy.int32)
    train = chainer.datasets.TupleDataset(x[:20], t[:20])
    test = chainer.datasets.TupleDataset(x[20:], t[20:])
    model = L.Classifier(cifar_models.ResNet(width=4, n_blocks=1))
    optimizer = chainer.optimizers.MomentumSGD(lr=0.05)
    optimizer.setup(model)
    optimizer.add_hook(chainer.optimizer_hooks.WeightDecay(5e-4))
    updater = chainer.training.updaters.StandardUpdater(
        chainer.iterators.SerialIterator(train, 10), optimizer)
    trainer = chainer.training.Trainer(updater, (2, 'epoch'), out=str(tmp_path))
    trainer.extend(ci.InfluenceExtension(train, test))
    trainer.run()
    doc = _json(str(tmp_path), 'influence', 'rankings.json')
    choice = doc['settings']['solver_choice']
    assert (choice['solver'], choice['curvature']) == ('EKFACSolver', 'gauss-newton')
    assert choice['damping_rule'] == 'EKFACSolver.default_damping' and choice['damping'] > 0
    assert len(doc['test_points']) == 10
    scores = numpy.load(os.path.join(str(tmp_path), 'influence', 'influence.npz'))['scores']
    assert scores.shape == (10, 20) and numpy.isfinite(scores).all()


# ---- no data ------------------------------------------------------------------------------
def test_missing_data_dir_exits_with_how_to(tmp_path):
    script = os.path.join(EXAMPLE_DIR, 'train_cifar.py')
    proc = subprocess.run([sys.executable, script, '--data-dir', str(tmp_path),
                           '--out', str(tmp_path / 'out')],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert 'Traceback' not in proc.stderr
    assert 'error: CIFAR-10' in proc.stderr and 'cifar-10-python.tar.gz' in proc.stderr


def test_failed_download_exits_with_how_to(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError('no network')

    monkeypatch.setattr(chainer.datasets, 'get_cifar10', offline)
    with pytest.raises(SystemExit) as info:
        train_cifar.main(['--epoch', '1'])
    assert 'no network' in str(info.value.code)
    assert 'CHAINER_DATASET_ROOT' in str(info.value.code)


# ---- the comparison -----------------------------------------------------------------------
def _report(scores, top_k=2):
    m, n = scores.shape
    return ci.InfluenceReport(scores, list(range(m)), [0] * m, [0] * n, top_k=top_k,
                              settings={'solver': 'test'})


def test_compare_reports_identical_and_reversed():
    scores = numpy.random.RandomState(0).randn(3, 12)
    same = compare_influence.compare_reports({'a': _report(scores), 'b': _report(scores)})
    assert same['mean'] == pytest.approx(
        {'helpful_overlap': 1.0, 'harmful_overlap': 1.0, 'spearman': 1.0})
    flipped = compare_influence.compare_reports({'a': _report(scores), 'b': _report(-scores)})
    assert flipped['mean'] == pytest.approx(
        {'helpful_overlap': 0.0, 'harmful_overlap': 0.0, 'spearman': -1.0})
    assert 'mean' in compare_influence.summary(flipped)


def test_compare_reports_constant_row_has_no_spearman():
    scores = numpy.random.RandomState(0).randn(2, 6)
    constant = scores.copy()
    constant[1] = 0.5
    comparison = compare_influence.compare_reports({'a': _report(scores),
                                                    'b': _report(constant)})
    assert comparison['test_points'][1]['spearman'] is None
    first = comparison['test_points'][0]['spearman']
    assert comparison['mean']['spearman'] == pytest.approx(first)
    json.dumps(comparison)  # JSON-ready


def test_compare_reports_rejects_mismatched_reports():
    with pytest.raises(ValueError, match='same test points'):
        compare_influence.compare_reports({'a': _report(numpy.zeros((2, 5))),
                                           'b': _report(numpy.zeros((2, 6)))})
