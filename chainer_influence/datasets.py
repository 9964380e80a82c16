"""Dataset loaders.

Every loader returns Chainer ``TupleDataset``s of ``(x float32, t int32)``, as
``chainer.datasets.get_mnist(withlabel=True, ndim=1, scale=1.)`` does: pixel values lie in
``[0, scale]``. MNIST-like loaders take ``ndim``: 1 -> (H*W,), 2 -> (H, W), 3 -> (1, H, W).

- :func:`load_fashion_mnist`: IDX files, by default from Debian's ``dataset-fashion-mnist``
  package (``/usr/share/datasets/fashion-mnist/``).
- :func:`load_mnist`, :func:`load_cifar10`: Chainer's downloaders (internet on first use);
  CIFAR-10 can also be read from the *python* batches in a local folder.
- :func:`load_digits`: scikit-learn's bundled 8x8 digits (no download), with
  :func:`train_test_split`.

A missing data set raises :class:`DataNotFoundError`, whose message says how to get it.
"""
import gzip
import os
import pickle
import struct

import numpy

import chainer
from chainer.datasets import TupleDataset

FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'

_DIGIT_NAMES = tuple(str(i) for i in range(10))

CLASS_NAMES = {
    'fashion-mnist': ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
                      'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'),
    'mnist': _DIGIT_NAMES,
    'digits': _DIGIT_NAMES,
    'cifar10': ('airplane', 'automobile', 'bird', 'cat', 'deer',
                'dog', 'frog', 'horse', 'ship', 'truck'),
}

_FASHION_MNIST_HOWTO = (
    'Install Debian\'s package (`sudo apt-get install dataset-fashion-mnist`, files in {}), '
    'or download the four IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, '
    't10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) from '
    'https://github.com/zalandoresearch/fashion-mnist and pass their folder as data_dir '
    '(--data-dir in the examples).'.format(FASHION_MNIST_DIR))

_DOWNLOAD_HOWTO = (
    'Chainer downloads it on first use into $CHAINER_DATASET_ROOT (default ~/.chainer/dataset): '
    'run once with internet access, or copy a cache made elsewhere there.')

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES = {0x08: '>u1', 0x09: '>i1', 0x0B: '>i2', 0x0C: '>i4', 0x0D: '>f4', 0x0E: '>f8'}


class DataNotFoundError(FileNotFoundError):
    """A data set is neither on disk nor downloadable; the message says how to get it."""


def read_idx(path):
    """Read an IDX file (``.gz`` or raw) into a native-endian numpy array of its stored shape."""
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rb') as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError('{} is not an IDX file (bad magic number)'.format(path))
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = struct.unpack('>{}I'.format(ndim), data[4:header])
    dtype = numpy.dtype(_IDX_DTYPES[data[2]])
    array = numpy.frombuffer(data, dtype=dtype, offset=header)
    if array.size != int(numpy.prod(dims)):
        raise ValueError('{}: header says shape {} but holds {} values'.format(
            path, dims, array.size))
    return array.reshape(dims).astype(dtype.newbyteorder('='))


def _image_dataset(images, labels, shape, scale, max_value):
    """TupleDataset of x = images reshaped to (N, *shape), scaled to [0, scale]; t int32."""
    x = images.reshape((len(images),) + tuple(shape)).astype(numpy.float32)
    x *= scale / max_value
    return TupleDataset(x, numpy.asarray(labels, dtype=numpy.int32))


def _grey_shape(side, ndim):
    shapes = {1: (side * side,), 2: (side, side), 3: (1, side, side)}
    if ndim not in shapes:
        raise ValueError('ndim must be 1, 2 or 3, got {}'.format(ndim))
    return shapes[ndim]


def _find_idx(data_dir, name):
    for candidate in (name + '.gz', name):
        path = os.path.join(data_dir, candidate)
        if os.path.exists(path):
            return path
    raise DataNotFoundError('Fashion-MNIST: {} not found in {}. {}'.format(
        name + '[.gz]', data_dir, _FASHION_MNIST_HOWTO))


def load_fashion_mnist(data_dir=None, ndim=1, scale=1.0):
    """Fashion-MNIST as ``(train, test)``: 60,000 and 10,000 examples of 28x28 grey images.

    Args:
        data_dir (str or None): folder with the four IDX files (gzipped or not);
            None reads Debian's ``/usr/share/datasets/fashion-mnist/``.
        ndim (int): 1 -> x (784,), 2 -> (28, 28), 3 -> (1, 28, 28).
        scale (float): pixel values are scaled to [0, scale].
    """
    data_dir = FASHION_MNIST_DIR if data_dir is None else data_dir
    shape = _grey_shape(28, ndim)
    splits = []
    for prefix in ('train', 't10k'):
        images = read_idx(_find_idx(data_dir, prefix + '-images-idx3-ubyte'))
        labels = read_idx(_find_idx(data_dir, prefix + '-labels-idx1-ubyte'))
        splits.append(_image_dataset(images, labels, shape, scale, 255.))
    return tuple(splits)


def load_mnist(ndim=1, scale=1.0):
    """MNIST as ``(train, test)`` through ``chainer.datasets.get_mnist`` (downloads once)."""
    try:
        return chainer.datasets.get_mnist(withlabel=True, ndim=ndim, scale=scale)
    except OSError as e:
        raise DataNotFoundError('MNIST could not be loaded ({}). {}'.format(
            e, _DOWNLOAD_HOWTO)) from e


def load_digits(ndim=1, scale=1.0):
    """scikit-learn's 1,797 8x8 digits as one TupleDataset; x in [0, scale] (pixels / 16).

    ndim: 1 -> x (64,), 2 -> (8, 8), 3 -> (1, 8, 8). Split it with :func:`train_test_split`.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as e:
        raise DataNotFoundError(
            'the digits data set ships with scikit-learn: `pip install scikit-learn`') from e
    digits = sklearn_load_digits()
    return _image_dataset(digits.data, digits.target, _grey_shape(8, ndim), scale, 16.)


def train_test_split(dataset, n_test, seed=0):
    """Split a dataset of tuples into ``(train, test)`` TupleDatasets, deterministically.

    ``n_test``: the number of test examples (an int), or their fraction (a float in (0, 1)), as
    scikit-learn's ``test_size``. They are drawn with ``numpy.random.RandomState(seed)``; both
    parts keep the original order of the examples (``chainer.datasets.split_dataset_random``,
    which this follows, returns shuffled views instead).
    """
    n = len(dataset)
    if isinstance(n_test, (float, numpy.floating)):
        if not 0.0 < n_test < 1.0:
            raise ValueError('a fractional n_test must lie in (0, 1), got {}'.format(n_test))
        n_test = int(round(n_test * n))
    if isinstance(n_test, bool) or not isinstance(n_test, (int, numpy.integer)):
        raise TypeError('n_test must be an int (a count) or a float in (0, 1) (a fraction), '
                        'got {!r}'.format(n_test))
    if not 0 <= n_test <= n:
        raise ValueError('n_test must be in [0, {}], got {}'.format(n, n_test))
    is_test = numpy.zeros(n, dtype=bool)
    is_test[numpy.random.RandomState(seed).permutation(n)[:n_test]] = True
    return tuple(
        TupleDataset(*chainer.dataset.concat_examples(
            [dataset[int(i)] for i in numpy.flatnonzero(mask)]))
        for mask in (~is_test, is_test))


def _read_cifar10_batches(data_dir, names, scale):
    data, labels = [], []
    for name in names:
        path = os.path.join(data_dir, name)
        if not os.path.exists(path):
            raise DataNotFoundError(
                'CIFAR-10: {} not found. Pass the folder of the python version\'s batches '
                '(data_batch_1..5, test_batch; cifar-10-python.tar.gz from '
                'https://www.cs.toronto.edu/~kriz/cifar.html, extracted) as data_dir, '
                'or data_dir=None to use Chainer\'s downloader.'.format(path))
        with open(path, 'rb') as f:
            batch = pickle.load(f, encoding='bytes')
        data.append(numpy.asarray(batch[b'data'], dtype=numpy.uint8))
        labels.extend(batch[b'labels'])
    return _image_dataset(numpy.concatenate(data), labels, (3, 32, 32), scale, 255.)


def load_cifar10(data_dir=None, scale=1.0):
    """CIFAR-10 as ``(train, test)``: 50,000 and 10,000 colour images, x (3, 32, 32) in [0, scale].

    Args:
        data_dir (str or None): folder holding the python batches (``data_batch_1`` ..
            ``data_batch_5``, ``test_batch``; a ``cifar-10-batches-py`` subfolder is also found);
            None uses ``chainer.datasets.get_cifar10`` (downloads once).
        scale (float): pixel values are scaled to [0, scale].
    """
    if data_dir is None:
        try:
            return chainer.datasets.get_cifar10(withlabel=True, ndim=3, scale=scale)
        except OSError as e:
            raise DataNotFoundError('CIFAR-10 could not be loaded ({}). {} Or pass data_dir: '
                                    'a folder with the python batches.'.format(
                                        e, _DOWNLOAD_HOWTO)) from e
    nested = os.path.join(data_dir, 'cifar-10-batches-py')
    if os.path.isdir(nested):
        data_dir = nested
    train = _read_cifar10_batches(
        data_dir, ['data_batch_{}'.format(i) for i in range(1, 6)], scale)
    test = _read_cifar10_batches(data_dir, ['test_batch'], scale)
    return train, test
