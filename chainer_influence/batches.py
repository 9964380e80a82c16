"""Turning Chainer datasets into device batches."""
import numpy

import chainer
from chainer.dataset import concat_examples


def dataset_length(dataset, what='dataset'):
    """Number of examples in a Chainer dataset or a tuple of arrays; an empty one is an error."""
    n = len(dataset[0]) if isinstance(dataset, tuple) and dataset else len(dataset)
    if n == 0:
        raise ValueError('the {} is empty'.format(what))
    return n


def get_batch(dataset, indices, device=None):
    """The examples at ``indices`` as a tuple of arrays on ``device`` (via ``concat_examples``).

    ``dataset`` is a Chainer dataset of tuples, or a tuple of arrays (x, t, ...) indexed along axis 0.
    """
    if isinstance(dataset, tuple):
        indices = numpy.asarray(list(indices) if isinstance(indices, range) else indices)
        batch = tuple(a[indices] for a in dataset)
        if device is not None:
            device = chainer.get_device(device)
            batch = tuple(device.send(a) for a in batch)
        return batch
    batch = concat_examples([dataset[int(i)] for i in indices], device)
    return batch if isinstance(batch, tuple) else (batch,)


def iterate_batches(dataset, batch_size, device=None, start=0, stop=None):
    """Yield ``(begin, end, batch)`` over ``dataset[start:stop]`` in order."""
    n = dataset_length(dataset)
    stop = n if stop is None else min(stop, n)
    for begin in range(start, stop, batch_size):
        end = min(begin + batch_size, stop)
        yield begin, end, get_batch(dataset, range(begin, end), device)
