import csv
import json
import os
import subprocess
import sys

import matplotlib.image
import numpy
import pytest

import chainer

from chainer_influence import plots
from chainer_influence import reporting
from chainer_influence.rankings import top_influential

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def brute_force(row, k):
    """Full sorts: (value, index) ascending for helpful, (-value, index) for harmful."""
    helpful = sorted(range(len(row)), key=lambda j: (row[j], j))[:k]
    harmful = sorted(range(len(row)), key=lambda j: (-row[j], j))[:k]
    return helpful, harmful


@pytest.mark.parametrize('ties', [False, True])
@pytest.mark.parametrize('top_k', [1, 5, 50, 80])
def test_top_influential_matches_full_sort(ties, top_k):
    rng = numpy.random.RandomState(top_k)
    if ties:
        scores = rng.randint(-3, 4, size=(7, 50)).astype(numpy.float32)
    else:
        scores = rng.standard_normal((7, 50))
    ranked = top_influential(scores, top_k)
    k = min(top_k, 50)
    for name in ('helpful', 'harmful', 'helpful_scores', 'harmful_scores'):
        assert ranked[name].shape == (7, k)
    assert ranked['helpful'].dtype.kind == 'i'
    for m, row in enumerate(scores):
        helpful, harmful = brute_force(list(row), k)
        assert list(ranked['helpful'][m]) == helpful
        assert list(ranked['harmful'][m]) == harmful
        numpy.testing.assert_array_equal(ranked['helpful_scores'][m], row[helpful])
        numpy.testing.assert_array_equal(ranked['harmful_scores'][m], row[harmful])


def test_top_influential_one_dimensional():
    scores = numpy.array([0.5, -2.0, 3.0, -2.0, 0.0, 3.0])
    ranked = top_influential(scores, 3)
    numpy.testing.assert_array_equal(ranked['helpful'], [1, 3, 4])
    numpy.testing.assert_array_equal(ranked['helpful_scores'], [-2.0, -2.0, 0.0])
    numpy.testing.assert_array_equal(ranked['harmful'], [2, 5, 0])
    numpy.testing.assert_array_equal(ranked['harmful_scores'], [3.0, 3.0, 0.5])


def test_top_influential_rejects_nan_and_bad_shapes():
    with pytest.raises(ValueError, match='NaN'):
        top_influential(numpy.array([[0.0, numpy.nan]]), 1)
    with pytest.raises(ValueError, match='shape'):
        top_influential(numpy.zeros((2, 2, 2)), 1)
    assert top_influential(numpy.zeros((3, 4)), 0)['helpful'].shape == (3, 0)


def make_report(m=3, n=12, top_k=4, seed=0, class_names=None, **kwargs):
    rng = numpy.random.RandomState(seed)
    arguments = dict(
        scores=rng.standard_normal((m, n)).astype(numpy.float32),
        test_indices=numpy.arange(m) * 2 + 1,
        test_labels=rng.randint(0, 10, size=m),
        train_labels=rng.randint(0, 10, size=n),
        predicted_labels=rng.randint(0, 10, size=m),
        test_losses=rng.uniform(0, 2, size=m),
        self_influence=rng.uniform(0, 1, size=n),
        top_k=top_k,
        settings={'solver': 'CGSolver', 'damping': numpy.float32(0.01), 'weight_decay': 1e-4,
                  'params': ('/l2/W', '/l2/b'), 'epoch': numpy.int64(3)},
        class_names=class_names)
    arguments.update(kwargs)
    return reporting.InfluenceReport(**arguments)


def test_report_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match='train_labels'):
        make_report(train_labels=numpy.zeros(5))
    with pytest.raises(ValueError, match='test_losses'):
        make_report(test_losses=numpy.zeros(2))
    with pytest.raises(ValueError, match='scores'):
        make_report(scores=numpy.zeros(12))


def test_json_writer(tmp_path):
    names = ['c{}'.format(i) for i in range(10)]
    report = make_report(class_names=names)
    path = reporting.JSONWriter()(report, str(tmp_path))
    assert path == os.path.join(str(tmp_path), 'rankings.json')
    with open(path) as f:
        data = json.load(f)
    assert data['settings'] == {'solver': 'CGSolver', 'damping': pytest.approx(0.01),
                                'weight_decay': 1e-4, 'params': ['/l2/W', '/l2/b'], 'epoch': 3}
    assert len(data['test_points']) == 3
    for m, point in enumerate(data['test_points']):
        assert point['test_index'] == 2 * m + 1
        assert point['label'] == report.test_labels[m]
        assert point['label_name'] == names[report.test_labels[m]]
        assert point['predicted'] == report.predicted_labels[m]
        assert point['test_loss'] == pytest.approx(report.test_losses[m])
        row = [float(s) for s in report.scores[m]]
        helpful, harmful = brute_force(row, 4)
        assert [e['train_index'] for e in point['helpful']] == helpful
        assert [e['train_index'] for e in point['harmful']] == harmful
        for entry in point['helpful'] + point['harmful']:
            assert entry['label'] == report.train_labels[entry['train_index']]
            assert entry['score'] == row[entry['train_index']]
        assert all(e['score'] < 0 for e in point['helpful'][:1])


def test_json_without_optional_fields(tmp_path):
    report = make_report(predicted_labels=None, test_losses=None, self_influence=None,
                         settings=None)
    with open(reporting.JSONWriter()(report, str(tmp_path))) as f:
        data = json.load(f)
    assert data['settings'] == {}
    point = data['test_points'][0]
    assert point['label_name'] is None and point['predicted'] is None
    assert point['test_loss'] is None


def test_csv_writer(tmp_path):
    report = make_report()
    path = reporting.CSVWriter()(report, str(tmp_path))
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0].keys()) == reporting.CSV_COLUMNS
    assert len(rows) == 3 * 2 * 4
    ranked = top_influential(report.scores, 4)
    for row in rows:
        m = (int(row['test_index']) - 1) // 2
        rank = int(row['rank'])
        j = ranked[row['kind']][m][rank - 1]
        assert int(row['train_index']) == j
        assert int(row['train_label']) == report.train_labels[j]
        assert float(row['score']) == float(report.scores[m, j])
        assert int(row['label']) == report.test_labels[m]
        assert int(row['predicted']) == report.predicted_labels[m]
        assert float(row['test_loss']) == pytest.approx(report.test_losses[m])
    assert sorted({row['kind'] for row in rows}) == ['harmful', 'helpful']


def test_npz_writer_round_trip(tmp_path):
    report = make_report(class_names=list('abcdefghij'))
    path = reporting.NPZWriter()(report, str(tmp_path))
    with numpy.load(path, allow_pickle=False) as data:
        numpy.testing.assert_array_equal(data['scores'], report.scores)
        numpy.testing.assert_array_equal(data['self_influence'], report.self_influence)
        numpy.testing.assert_array_equal(data['train_labels'], report.train_labels)
        numpy.testing.assert_array_equal(data['test_indices'], report.test_indices)
    loaded = reporting.InfluenceReport.load_npz(path)
    for name in ('scores', 'test_indices', 'test_labels', 'train_labels', 'predicted_labels',
                 'test_losses', 'self_influence'):
        numpy.testing.assert_array_equal(getattr(loaded, name), getattr(report, name))
    assert loaded.top_k == 4 and loaded.class_names == list('abcdefghij')
    assert loaded.to_dict() == json.loads(json.dumps(report.to_dict()))


def test_npz_without_self_influence(tmp_path):
    report = make_report(self_influence=None, predicted_labels=None)
    path = reporting.NPZWriter(compressed=True)(report, str(tmp_path))
    with numpy.load(path, allow_pickle=False) as data:
        assert 'self_influence' not in data.files and 'predicted_labels' not in data.files
    assert reporting.InfluenceReport.load_npz(path).self_influence is None


def test_write_report_leaves_only_its_files(tmp_path):
    out = str(tmp_path / 'new' / 'dir')
    paths = reporting.write_report(make_report(), out)
    assert sorted(os.listdir(out)) == ['influence.npz', 'rankings.csv', 'rankings.json',
                                       'self_influence.csv']
    assert sorted(paths) == sorted(os.path.join(out, f) for f in os.listdir(out))
    reporting.write_report(make_report(seed=1), out)  # overwrite in place
    assert sorted(os.listdir(out)) == ['influence.npz', 'rankings.csv', 'rankings.json',
                                       'self_influence.csv']
    assert all(os.stat(path).st_mode & 0o777 == 0o644 for path in paths)


class FailingWriter(reporting.Writer):
    def __init__(self):
        super(FailingWriter, self).__init__('rankings.json')

    def write(self, report, f):
        f.write('partial')
        raise RuntimeError('disk full')


def test_failed_write_keeps_old_file_and_no_temp(tmp_path):
    report = make_report()
    path = reporting.JSONWriter()(report, str(tmp_path))
    with open(path) as f:
        before = f.read()
    with pytest.raises(RuntimeError):
        FailingWriter()(report, str(tmp_path))
    assert os.listdir(str(tmp_path)) == ['rankings.json']
    with open(path) as f:
        assert f.read() == before


def test_custom_writer_callable(tmp_path):
    def count_writer(report, out_dir):
        path = os.path.join(out_dir, 'count.txt')
        with open(path, 'w') as f:
            f.write(str(report.scores.shape))
        return path

    paths = reporting.write_report(make_report(), str(tmp_path),
                                   writers=reporting.DEFAULT_WRITERS + (count_writer,))
    assert paths[-1] == os.path.join(str(tmp_path), 'count.txt')
    assert len(paths) == len(reporting.DEFAULT_WRITERS) + 1


def assert_png(path, min_size=(50, 50)):
    with open(path, 'rb') as f:
        assert f.read(8) == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] >= min_size[0] and image.shape[1] >= min_size[1]
    return image


@pytest.mark.parametrize('shape', [(784,), (1, 28, 28), (28, 28), (64,), (3, 32, 32),
                                   (3072,)])
def test_as_image_shapes(shape):
    rng = numpy.random.RandomState(0)
    x = rng.uniform(-0.5, 1.5, size=shape).astype(numpy.float32)
    image = plots.as_image(x)
    colour = 3 in shape or 3072 in shape
    side = {784: 28, 64: 8, 3072: 32}.get(x.size, shape[-1])
    assert image.shape == ((side, side, 3) if colour else (side, side))
    assert image.min() >= 0.0 and image.max() <= 1.0
    if shape == (3, 32, 32):
        numpy.testing.assert_allclose(image[4, 5], numpy.clip(x[:, 4, 5], 0, 1), rtol=1e-6)
    assert plots.as_image(x * 255, value_range=(0, 255)) == pytest.approx(image, abs=1e-5)


def test_as_image_rejects_unknown_shapes():
    with pytest.raises(ValueError):
        plots.as_image(numpy.zeros(10))
    with pytest.raises(ValueError):
        plots.as_image(numpy.zeros((2, 5, 5)))


@pytest.mark.parametrize('kind', ['grey', 'digits', 'colour'])
def test_plot_top_influential(tmp_path, kind):
    shape = {'grey': (1, 28, 28), 'digits': (64,), 'colour': (3, 32, 32)}[kind]
    rng = numpy.random.RandomState(0)
    train_x = rng.uniform(0, 1, size=(12,) + shape).astype(numpy.float32)
    test_x = rng.uniform(0, 1, size=(6,) + shape).astype(numpy.float32)
    report = make_report(top_k=3, class_names=['T-shirt/top'] * 10 if kind == 'grey' else None)
    train = chainer.datasets.TupleDataset(train_x, report.train_labels)
    path = str(tmp_path / 'figs' / 'top.png')
    assert plots.plot_top_influential(report, test_x, train, path, n_show=2) == path
    image = assert_png(path)
    assert image.shape[1] > image.shape[0]  # 2 rows, 7 columns


def test_plot_ranking_comparison(tmp_path):
    rng = numpy.random.RandomState(0)
    train_x = rng.uniform(0, 1, size=(12, 64))
    test_x = rng.uniform(0, 1, size=(6, 64))
    plain = make_report(top_k=2)
    normalised = make_report(top_k=2, scores=plain.scores / numpy.arange(1, 13))
    path = str(tmp_path / 'compare.png')
    assert plots.plot_ranking_comparison({'influence': plain, 'RelatIF': normalised}, test_x,
                                         train_x, path, n_show=2) == path
    image = assert_png(path)
    assert image.shape[0] > image.shape[1] * 0.8  # 4 rows of 5 tiles
    other = make_report(top_k=2, test_indices=numpy.arange(3))
    with pytest.raises(ValueError, match='different test points'):
        plots.plot_ranking_comparison({'a': plain, 'b': other}, test_x, train_x, path)


def test_plot_self_influence(tmp_path):
    values = numpy.random.RandomState(0).exponential(size=200)
    path = plots.plot_self_influence(values, str(tmp_path / 'self.png'), flipped=[3, 10, 50])
    assert_png(path)
    mask = numpy.zeros(200, dtype=bool)
    mask[:20] = True
    assert_png(plots.plot_self_influence(values, str(tmp_path / 'mask.png'), flipped=mask))
    assert_png(plots.plot_self_influence(values, str(tmp_path / 'plain.png')))


def test_plot_loo_scatter(tmp_path):
    rng = numpy.random.RandomState(0)
    actual = rng.standard_normal(30)
    predicted = actual + 0.1 * rng.standard_normal(30)
    assert_png(plots.plot_loo_scatter(predicted, actual, str(tmp_path / 'loo.png'),
                                      title='MLP, Fashion-MNIST'))


def test_plot_detection_curves(tmp_path):
    x = numpy.linspace(0, 1, 11)
    curves = {'influence': (x, numpy.sqrt(x)), 'loss': (x, x ** 0.8), 'random': (x, x)}
    assert_png(plots.plot_detection_curves(curves, str(tmp_path / 'a' / 'b' / 'det.png')))


def test_package_import_does_not_load_matplotlib():
    code = 'import sys, chainer_influence; assert "matplotlib" not in sys.modules'
    subprocess.run([sys.executable, '-c', code], check=True)
