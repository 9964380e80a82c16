"""On-disk cache of s_test vectors and influence score blocks, keyed by a fingerprint.

Layout: ``cache_dir/<fingerprint>/settings.json`` and ``.npy`` files written atomically (temporary
file, then ``os.replace``), so an interrupted run leaves only complete files and resumes from them.
The fingerprint hashes the model's parameter values, the training data, the test data and the
settings; a cache made for anything else lives under another fingerprint and is never reused.
"""
import hashlib
import json
import os
import warnings

import numpy

from chainer_influence.files import atomic_write
from chainer_influence.rankings import to_host


def hash_arrays(arrays, digest=None):
    """Update (or start) a sha1 digest with the dtype, shape and bytes of each array."""
    digest = digest or hashlib.sha1()
    for a in arrays:
        a = numpy.ascontiguousarray(to_host(a))
        digest.update(str((a.dtype.str, a.shape)).encode())
        digest.update(a.tobytes())
    return digest


def fingerprint(param_arrays, data_arrays, settings):
    """A short hex key for parameter values, data samples and a JSON-able settings dict."""
    digest = hash_arrays(list(param_arrays) + list(data_arrays))
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


class ScoreCache(object):
    """Atomic ``.npy`` store under ``cache_dir/<key>/``; a no-op when ``cache_dir`` is None."""

    def __init__(self, cache_dir, key, settings):
        self.directory = None
        if cache_dir is None:
            return
        others = [d for d in _subdirs(cache_dir) if d != key]
        if others:
            warnings.warn(
                'cache_dir {} holds results for other models, data or settings ({}); they are '
                'not reused. Using {}.'.format(cache_dir, ', '.join(sorted(others)), key))
        self.directory = os.path.join(cache_dir, key)
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, 'settings.json')
        if not os.path.exists(path):
            atomic_write(path, lambda f: f.write(
                json.dumps(settings, sort_keys=True, indent=1, default=str).encode()))

    def load(self, name):
        """The array stored as ``name`` or None."""
        if self.directory is None:
            return None
        path = os.path.join(self.directory, name + '.npy')
        return numpy.load(path) if os.path.exists(path) else None

    def save(self, name, array):
        if self.directory is not None:
            atomic_write(os.path.join(self.directory, name + '.npy'),
                          lambda f: numpy.save(f, to_host(array)))


def _subdirs(path):
    if not os.path.isdir(path):
        return []
    return [d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d))]
