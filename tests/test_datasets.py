import gzip
import os
import pickle
import struct
import urllib.error

import numpy
import pytest

import chainer

from chainer_influence import datasets


def write_idx(path, array):
    """An IDX file written independently of the reader: magic 0 0 type ndim, dims big-endian."""
    codes = {numpy.uint8: 0x08, numpy.int32: 0x0C, numpy.float32: 0x0D}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim])
    header += b''.join(struct.pack('>I', d) for d in array.shape)
    body = array.astype(array.dtype.newbyteorder('>')).tobytes()
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'wb') as f:
        f.write(header + body)


def fake_fashion_mnist(directory, n_train=5, n_test=3, suffix='.gz', seed=0):
    rng = numpy.random.RandomState(seed)
    arrays = {}
    for prefix, n in (('train', n_train), ('t10k', n_test)):
        images = rng.randint(0, 256, size=(n, 28, 28)).astype(numpy.uint8)
        labels = rng.randint(0, 10, size=n).astype(numpy.uint8)
        write_idx(os.path.join(directory, prefix + '-images-idx3-ubyte' + suffix), images)
        write_idx(os.path.join(directory, prefix + '-labels-idx1-ubyte' + suffix), labels)
        arrays[prefix] = images, labels
    return arrays


IDX_ARRAYS = [
    numpy.arange(24, dtype=numpy.uint8).reshape(2, 3, 4) * 10,
    (numpy.arange(6, dtype=numpy.int32) - 3) * 100000,
    numpy.linspace(-1, 1, 10, dtype=numpy.float32).reshape(5, 2),
]


@pytest.mark.parametrize('array', IDX_ARRAYS, ids=lambda a: a.dtype.name)
@pytest.mark.parametrize('suffix', ['', '.gz'])
def test_read_idx(tmp_path, array, suffix):
    path = str(tmp_path / ('a.idx' + suffix))
    write_idx(path, array)
    got = datasets.read_idx(path)
    assert got.dtype == array.dtype and got.dtype.isnative
    numpy.testing.assert_array_equal(got, array)


def test_read_idx_rejects_bad_files(tmp_path):
    bad = tmp_path / 'bad'
    bad.write_bytes(b'\x01\x02\x08\x01\x00\x00\x00\x02ab')
    with pytest.raises(ValueError, match='magic'):
        datasets.read_idx(str(bad))
    short = tmp_path / 'short'
    short.write_bytes(b'\x00\x00\x08\x01\x00\x00\x00\x05ab')
    with pytest.raises(ValueError, match='shape'):
        datasets.read_idx(str(short))


@pytest.mark.parametrize('ndim,shape', [(1, (784,)), (2, (28, 28)), (3, (1, 28, 28))])
@pytest.mark.parametrize('suffix', ['', '.gz'])
def test_load_fashion_mnist_from_dir(tmp_path, ndim, shape, suffix):
    arrays = fake_fashion_mnist(str(tmp_path), suffix=suffix)
    train, test = datasets.load_fashion_mnist(str(tmp_path), ndim=ndim, scale=2.0)
    for dataset, prefix in ((train, 'train'), (test, 't10k')):
        images, labels = arrays[prefix]
        assert len(dataset) == len(images)
        for i in range(len(images)):
            x, t = dataset[i]
            assert x.shape == shape and x.dtype == numpy.float32
            assert t.dtype == numpy.int32 and t == labels[i]
            numpy.testing.assert_allclose(
                x.reshape(28, 28), images[i] / 255. * 2.0, rtol=1e-6)


def test_load_fashion_mnist_missing_dir(tmp_path):
    missing = str(tmp_path / 'nowhere')
    with pytest.raises(datasets.DataNotFoundError) as info:
        datasets.load_fashion_mnist(missing)
    message = str(info.value)
    assert 'sudo apt-get install dataset-fashion-mnist' in message
    assert missing in message and 'data_dir' in message
    assert isinstance(info.value, FileNotFoundError)


def test_load_fashion_mnist_bad_ndim(tmp_path):
    fake_fashion_mnist(str(tmp_path))
    with pytest.raises(ValueError, match='ndim'):
        datasets.load_fashion_mnist(str(tmp_path), ndim=4)


@pytest.mark.skipif(
    not os.path.exists(os.path.join(datasets.FASHION_MNIST_DIR, 'train-images-idx3-ubyte.gz')),
    reason='Debian package dataset-fashion-mnist is not installed')
def test_load_fashion_mnist_debian():
    train, test = datasets.load_fashion_mnist()
    assert (len(train), len(test)) == (60000, 10000)
    for dataset, per_class in ((train, 6000), (test, 1000)):
        x, t = chainer.dataset.concat_examples(dataset[:1000])
        assert x.shape == (1000, 784) and x.dtype == numpy.float32 and t.dtype == numpy.int32
        assert x.min() == 0.0 and x.max() == 1.0  # the 8-bit range [0, 255] scaled to [0, 1]
        labels = numpy.array([label for _, label in dataset[:]])
        # Fashion-MNIST is balanced: 6,000 / 1,000 examples of each of the 10 classes.
        numpy.testing.assert_array_equal(numpy.bincount(labels, minlength=10), [per_class] * 10)


@pytest.mark.parametrize('ndim,shape', [(1, (64,)), (2, (8, 8)), (3, (1, 8, 8))])
def test_load_digits(ndim, shape):
    sklearn_datasets = pytest.importorskip('sklearn.datasets')
    reference = sklearn_datasets.load_digits()
    dataset = datasets.load_digits(ndim=ndim, scale=3.0)
    assert len(dataset) == 1797
    x, t = chainer.dataset.concat_examples(dataset[:])
    assert x.shape == (1797,) + shape and x.dtype == numpy.float32 and t.dtype == numpy.int32
    numpy.testing.assert_allclose(x.reshape(1797, 64), reference.data / 16. * 3.0, rtol=1e-6)
    numpy.testing.assert_array_equal(t, reference.target)
    assert x.min() >= 0.0 and x.max() <= 3.0


def test_train_test_split():
    x = numpy.arange(20, dtype=numpy.float32).reshape(10, 2)
    t = numpy.arange(10, dtype=numpy.int32)
    dataset = chainer.datasets.TupleDataset(x, t)
    train, test = datasets.train_test_split(dataset, 3, seed=5)
    again_train, again_test = datasets.train_test_split(dataset, 3, seed=5)
    assert (len(train), len(test)) == (7, 3)
    train_t = [int(e[1]) for e in train]
    test_t = [int(e[1]) for e in test]
    assert sorted(train_t + test_t) == list(range(10))
    assert train_t == sorted(train_t) and test_t == sorted(test_t)
    assert test_t == [int(e[1]) for e in again_test]
    assert train_t == [int(e[1]) for e in again_train]
    for xi, ti in list(train) + list(test):
        numpy.testing.assert_array_equal(xi, x[ti])
    other = [int(e[1]) for e in datasets.train_test_split(dataset, 3, seed=6)[1]]
    assert len(other) == 3
    with pytest.raises(ValueError):
        datasets.train_test_split(dataset, 11)


def write_cifar_batches(directory, n=4, seed=0):
    rng = numpy.random.RandomState(seed)
    batches = {}
    names = ['data_batch_{}'.format(i) for i in range(1, 6)] + ['test_batch']
    for name in names:
        batch = {b'data': rng.randint(0, 256, size=(n, 3072)).astype(numpy.uint8),
                 b'labels': list(rng.randint(0, 10, size=n))}
        with open(os.path.join(directory, name), 'wb') as f:
            pickle.dump(batch, f)
        batches[name] = batch
    return batches


@pytest.mark.parametrize('nested', [False, True])
def test_load_cifar10_from_dir(tmp_path, nested):
    directory = tmp_path / 'cifar-10-batches-py' if nested else tmp_path
    directory.mkdir(exist_ok=True)
    batches = write_cifar_batches(str(directory))
    train, test = datasets.load_cifar10(str(tmp_path), scale=1.0)
    assert (len(train), len(test)) == (20, 4)
    x, t = train[5]  # batch 2, row 1
    raw = batches['data_batch_2'][b'data'][1]
    assert x.shape == (3, 32, 32) and x.dtype == numpy.float32 and t.dtype == numpy.int32
    assert t == batches['data_batch_2'][b'labels'][1]
    for c, h, w in [(0, 0, 0), (1, 3, 7), (2, 31, 30)]:  # rows of R, G, B planes, row-major
        assert x[c, h, w] == pytest.approx(raw[c * 1024 + h * 32 + w] / 255.)
    x, t = test[3]
    numpy.testing.assert_allclose(
        x.ravel(), batches['test_batch'][b'data'][3] / 255., rtol=1e-6)


def test_load_cifar10_missing_dir(tmp_path):
    with pytest.raises(datasets.DataNotFoundError, match='data_batch_1'):
        datasets.load_cifar10(str(tmp_path))


def raise_offline(*args, **kwargs):
    raise urllib.error.URLError('no network')


def test_downloaders_offline(monkeypatch):
    monkeypatch.setattr(chainer.datasets, 'get_mnist', raise_offline)
    monkeypatch.setattr(chainer.datasets, 'get_cifar10', raise_offline)
    with pytest.raises(datasets.DataNotFoundError, match='internet'):
        datasets.load_mnist()
    with pytest.raises(datasets.DataNotFoundError, match='data_dir'):
        datasets.load_cifar10()


def test_load_mnist_passes_arguments(monkeypatch):
    calls = []
    monkeypatch.setattr(chainer.datasets, 'get_mnist', lambda **kw: calls.append(kw) or 'ok')
    assert datasets.load_mnist(ndim=3, scale=255.) == 'ok'
    assert calls == [{'withlabel': True, 'ndim': 3, 'scale': 255.}]


def test_class_names():
    assert set(datasets.CLASS_NAMES) == {'fashion-mnist', 'mnist', 'cifar10', 'digits'}
    for names in datasets.CLASS_NAMES.values():
        assert len(names) == 10 and len(set(names)) == 10
    assert datasets.CLASS_NAMES['fashion-mnist'][9] == 'Ankle boot'
    assert datasets.CLASS_NAMES['cifar10'][0] == 'airplane'
