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
    if isinstance(dataset, CheckedDataset):
        return dataset.get_batch(indices, device)
    if isinstance(dataset, tuple):
        indices = _index_array(indices)
        batch = tuple(a[indices] for a in dataset)
        if device is not None:
            device = chainer.get_device(device)
            batch = tuple(device.send(a) for a in batch)
        return batch
    batch = concat_examples([dataset[int(i)] for i in indices], device)
    return batch if isinstance(batch, tuple) else (batch,)


def _index_array(indices):
    """``indices`` (a range, list or array) as a numpy array."""
    return numpy.asarray(list(indices) if isinstance(indices, range) else indices)


def iterate_batches(dataset, batch_size, device=None, start=0, stop=None):
    """Yield ``(begin, end, batch)`` over ``dataset[start:stop]`` in order."""
    n = dataset_length(dataset)
    stop = n if stop is None else min(stop, n)
    for begin in range(start, stop, batch_size):
        end = min(begin + batch_size, stop)
        yield begin, end, get_batch(dataset, range(begin, end), device)


class TupleView(chainer.dataset.DatasetMixin):
    """A dataset of dicts (e.g. ``chainer.datasets.DictDataset``) seen as a dataset of tuples.

    ``TupleView(DictDataset(x=x, t=t), keys=('x', 't'))[i] == (x[i], t[i])``: the library's loss
    functions take ``loss_fn(model, *example)``, so list the model's inputs in the order the
    predictor takes them, then the label (an ``L.Classifier``'s ``label_key``).
    """

    def __init__(self, dataset, keys):
        self.dataset = dataset
        self.keys = tuple(keys)
        example = dataset[0]
        missing = [k for k in self.keys if k not in example]
        if missing:
            raise KeyError('keys {} are not in the examples, whose keys are {}'.format(
                missing, sorted(example)))

    def __len__(self):
        return len(self.dataset)

    def get_example(self, i):
        example = self.dataset[i]
        return tuple(example[k] for k in self.keys)


def as_tuples(dataset, keys=None, label_key=None):
    """``dataset`` unchanged when its examples are tuples; a :class:`TupleView` when they are dicts.

    ``keys`` orders a dict's values; None: every key but ``label_key`` in the example's order, then
    ``label_key`` (default: the last key).
    """
    if isinstance(dataset, tuple) or not isinstance(dataset[0], dict):
        if keys is not None:
            raise ValueError('keys= applies to datasets of dicts (e.g. DictDataset); these '
                             'examples are {}'.format(type(dataset[0]).__name__))
        return dataset
    if keys is None:
        names = list(dataset[0])
        label = names[-1] if label_key is None else label_key
        if label not in names:
            raise KeyError('the label key {!r} is not among the example keys {}: pass keys=(inputs'
                           '..., label)'.format(label, names))
        keys = [k for k in names if k != label] + [label]
    return TupleView(dataset, keys)


class CheckedDataset(object):
    """A dataset whose batches pass through ``check(batch, indices)`` as :func:`get_batch` reads
    them, so examples are validated inside the passes that already read them (no extra pass).

    ``check`` is e.g. a :class:`~chainer_influence.checks.ExampleChecker`; it raises on a bad
    example. Indexing and ``len`` are those of ``dataset``.
    """

    def __init__(self, dataset, check):
        self.dataset = dataset
        self.check = check

    def __len__(self):
        return dataset_length(self.dataset)

    def __getitem__(self, index):
        return self.dataset[index]

    def get_batch(self, indices, device=None):
        indices = _index_array(indices)
        batch = get_batch(self.dataset, indices, device)
        self.check(batch, indices)
        return batch
