"""Influence reports and their writers (JSON, CSV, NPZ), pluggable.

An :class:`InfluenceReport` holds the (M, N) influence matrix I_up,loss of M test points against
N training examples (negative = helpful, positive = harmful) with the labels and settings that
explain it. A *writer* is any callable ``writer(report, out_dir) -> path`` that writes one file
into ``out_dir``; :data:`DEFAULT_WRITERS` writes the files below. Files are written atomically
(a temporary file in ``out_dir``, then ``os.replace``).

``rankings.json`` (:class:`JSONWriter`)::

    {"settings": {...},                      # solver, damping, weight_decay, params, epoch, ...
     "test_points": [
        {"test_index": int,                  # index into the test dataset
         "label": int, "label_name": str|null, "predicted": int|null, "test_loss": float|null,
         "helpful": [{"train_index": int, "label": int, "score": float}, ...],
         "harmful": [{"train_index": int, "label": int, "score": float}, ...]},
        ...]}

With self-influence, the JSON also holds ``"self_influence_top": [{"train_index": int, "label": int,
"label_name": str|null, "score": float}, ...]``: the top_k training examples of largest
self-influence (the candidates for mislabelled or atypical examples), largest first.

``helpful`` lists the top_k smallest (most negative) scores, smallest first; ``harmful`` the
top_k largest (most positive), largest first; equal scores go by lower ``train_index``. ``label`` in an entry is
the training example's label; ``predicted``, ``test_loss`` and ``label_name`` are null when the
report lacks them.

``rankings.csv`` (:class:`CSVWriter`): one row per (test point, kind, rank) with the columns
``test_index, label, predicted, test_loss, kind, rank, train_index, train_label, score``;
kind is ``helpful`` or ``harmful``, rank counts from 1 (1 = most helpful / most harmful).

``self_influence.csv`` (:class:`SelfInfluenceCSVWriter`, only with self-influence): the
``self_influence_top`` list, columns ``rank, train_index, label, label_name, score``.

``influence.npz`` (:class:`NPZWriter`): ``scores`` (M, N), ``test_indices``, ``test_labels``,
``train_labels``, ``top_k``, ``settings_json`` (the settings as a JSON string) and, when present,
``predicted_labels``, ``test_losses``, ``self_influence`` (N,), ``class_names``.
:meth:`InfluenceReport.load_npz` reads it back.
"""
import csv
import json
import os

import numpy

from chainer_influence.files import atomic_write
from chainer_influence.devices import to_host
from chainer_influence.rankings import top_influential


def _jsonable(value):
    """``value`` with numpy scalars and arrays, tuples and other objects made JSON-ready."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, numpy.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, numpy.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _optional(array, i, cast):
    return None if array is None else cast(array[i])


class InfluenceReport(object):
    """Influence of N training examples on M test points, with what explains it.

    Args:
        scores: (M, N) I_up,loss matrix; negative = helpful, positive = harmful.
        test_indices: (M,) indices of the test points in the test dataset.
        test_labels: (M,) true labels of the test points.
        train_labels: (N,) labels of the training examples.
        predicted_labels: (M,) predicted labels, or None.
        test_losses: (M,) test losses, or None.
        self_influence: (N,) self-influence of the training examples, or None.
        top_k (int): how many helpful and harmful examples the rankings keep.
        settings (dict): how the scores were computed (solver, damping, weight_decay, params,
            iteration, epoch, ...); stored as given, written as JSON.
        class_names (list of str or None): label names for figures and ``label_name``.

    Arrays may be numpy or cupy; they are kept as numpy.
    """

    def __init__(self, scores, test_indices, test_labels, train_labels,
                 predicted_labels=None, test_losses=None, self_influence=None,
                 top_k=10, settings=None, class_names=None):
        self.scores = to_host(scores)
        if self.scores.ndim != 2:
            raise ValueError('scores must be (M, N), got shape {}'.format(self.scores.shape))
        m, n = self.scores.shape
        self.test_indices = to_host(test_indices, numpy.int64)
        self.test_labels = to_host(test_labels, numpy.int64)
        self.train_labels = to_host(train_labels, numpy.int64)
        self.predicted_labels = to_host(predicted_labels, numpy.int64)
        self.test_losses = to_host(test_losses, numpy.float64)
        self.self_influence = to_host(self_influence)
        for name, size in (('test_indices', m), ('test_labels', m), ('predicted_labels', m),
                           ('test_losses', m), ('train_labels', n), ('self_influence', n)):
            array = getattr(self, name)
            if array is not None and array.shape != (size,):
                raise ValueError('{} must have shape ({},) to match scores {}, got {}'.format(
                    name, size, self.scores.shape, array.shape))
        self.top_k = int(top_k)
        self.settings = dict(settings or {})
        self.class_names = None if class_names is None else [str(c) for c in class_names]

    def label_name(self, label):
        """The class name of ``label``, or None without class names."""
        return None if self.class_names is None else self.class_names[int(label)]

    def rankings(self):
        """:func:`~chainer_influence.rankings.top_influential` of the scores with ``top_k``."""
        return top_influential(self.scores, self.top_k)

    def self_influence_top(self):
        """The top_k training examples of largest self-influence, largest first (ties: lower
        index), as dicts ``train_index, label, label_name, score``; [] without self-influence."""
        if self.self_influence is None:
            return []
        ranked = top_influential(self.self_influence, self.top_k)
        return [{'train_index': int(j), 'label': int(self.train_labels[j]),
                 'label_name': self.label_name(self.train_labels[j]), 'score': float(score)}
                for j, score in zip(ranked['harmful'], ranked['harmful_scores'])]

    def to_dict(self):
        """The JSON structure described in this module's docstring."""
        ranked = self.rankings()
        points = []
        for i, test_index in enumerate(self.test_indices):
            point = {
                'test_index': int(test_index),
                'label': int(self.test_labels[i]),
                'label_name': self.label_name(self.test_labels[i]),
                'predicted': _optional(self.predicted_labels, i, int),
                'test_loss': _optional(self.test_losses, i, float),
            }
            for kind in ('helpful', 'harmful'):
                point[kind] = [
                    {'train_index': int(j), 'label': int(self.train_labels[j]),
                     'score': float(score)}
                    for j, score in zip(ranked[kind][i], ranked[kind + '_scores'][i])]
            points.append(point)
        doc = {'settings': _jsonable(self.settings), 'test_points': points}
        if self.self_influence is not None:
            doc['self_influence_top'] = self.self_influence_top()
        return doc

    def to_arrays(self):
        """The report as a dict of numpy arrays (what :class:`NPZWriter` stores)."""
        arrays = {
            'scores': self.scores,
            'test_indices': self.test_indices,
            'test_labels': self.test_labels,
            'train_labels': self.train_labels,
            'top_k': numpy.asarray(self.top_k),
            'settings_json': numpy.asarray(json.dumps(_jsonable(self.settings))),
            'predicted_labels': self.predicted_labels,
            'test_losses': self.test_losses,
            'self_influence': self.self_influence,
            'class_names': None if self.class_names is None else numpy.asarray(self.class_names),
        }
        return {name: value for name, value in arrays.items() if value is not None}

    @classmethod
    def load_npz(cls, path):
        """Read a report written by :class:`NPZWriter` (settings come back as JSON types)."""
        with numpy.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        names = arrays.pop('class_names', None)
        return cls(settings=json.loads(str(arrays.pop('settings_json'))),
                   top_k=int(arrays.pop('top_k')),
                   class_names=None if names is None else names.tolist(),
                   **arrays)


class Writer(object):
    """Base of the file writers: ``writer(report, out_dir)`` writes ``out_dir/filename``.

    Subclasses set ``binary`` and implement ``write(report, file)``.
    """

    binary = False

    def __init__(self, filename):
        self.filename = filename

    def __call__(self, report, out_dir):
        path = os.path.join(out_dir, self.filename)
        return atomic_write(path, lambda f: self.write(report, f), self.binary)

    def write(self, report, f):
        raise NotImplementedError


class JSONWriter(Writer):
    """Writes ``report.to_dict()`` as JSON (schema in the module docstring)."""

    def __init__(self, filename='rankings.json', indent=1):
        super(JSONWriter, self).__init__(filename)
        self.indent = indent

    def write(self, report, f):
        json.dump(report.to_dict(), f, indent=self.indent)
        f.write('\n')


CSV_COLUMNS = ('test_index', 'label', 'predicted', 'test_loss', 'kind', 'rank',
               'train_index', 'train_label', 'score')


class CSVWriter(Writer):
    """Writes one row per (test point, kind, rank); columns :data:`CSV_COLUMNS`, rank from 1."""

    def __init__(self, filename='rankings.csv'):
        super(CSVWriter, self).__init__(filename)

    def write(self, report, f):
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for point in report.to_dict()['test_points']:
            head = [point['test_index'], point['label'], point['predicted'], point['test_loss']]
            for kind in ('helpful', 'harmful'):
                for rank, entry in enumerate(point[kind], 1):
                    writer.writerow(head + [kind, rank, entry['train_index'], entry['label'],
                                            entry['score']])


class SelfInfluenceCSVWriter(Writer):
    """Writes the top self-influence examples (see the module docstring); nothing (returns None)
    when the report has no self-influence."""

    COLUMNS = ('rank', 'train_index', 'label', 'label_name', 'score')

    def __init__(self, filename='self_influence.csv'):
        super(SelfInfluenceCSVWriter, self).__init__(filename)

    def __call__(self, report, out_dir):
        if report.self_influence is None:
            return None
        return super(SelfInfluenceCSVWriter, self).__call__(report, out_dir)

    def write(self, report, f):
        writer = csv.writer(f)
        writer.writerow(self.COLUMNS)
        for rank, entry in enumerate(report.self_influence_top(), 1):
            writer.writerow([rank, entry['train_index'], entry['label'], entry['label_name'],
                             entry['score']])


class NPZWriter(Writer):
    """Writes ``report.to_arrays()`` with ``numpy.savez`` (readable without pickle)."""

    binary = True

    def __init__(self, filename='influence.npz', compressed=False):
        super(NPZWriter, self).__init__(filename)
        self.compressed = compressed

    def write(self, report, f):
        save = numpy.savez_compressed if self.compressed else numpy.savez
        save(f, **report.to_arrays())


DEFAULT_WRITERS = (JSONWriter(), CSVWriter(), SelfInfluenceCSVWriter(), NPZWriter())


def write_report(report, out_dir, writers=DEFAULT_WRITERS):
    """Run each writer on ``report`` into ``out_dir``; returns the list of written paths (a writer
    that had nothing to write returns None and is left out)."""
    return [path for path in (writer(report, out_dir) for writer in writers) if path is not None]
