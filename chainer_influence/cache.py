"""On-disk cache of s_test vectors and influence score blocks, keyed by a fingerprint.

Layout: ``cache_dir/<key>/settings.json`` and ``<name>.npy`` blocks. ``<key>`` (16 hex digits)
hashes everything a score depends on (see :mod:`chainer_influence.fingerprints` and
``InfluenceFunctions``): every training example, the loss function's identity and code, the
model's structure (link classes, the functions of one forward pass and their shapes), all
parameter and persistent values, the solver and its settings, damping, weight decay, the tracked
parameter names and the library versions. Test points and s_test enter the block names. Anything
changed gives another key, so a cache is never reused for other inputs.

Rules:

* Writes are atomic (temporary file, then ``os.replace``): an interrupted run leaves only complete
  blocks and resumes from them. Temporary files (``.*.tmp``) left by killed runs and untouched
  for a minute are removed when a cache is opened (see :mod:`chainer_influence.files`).
* Every block read is validated (readable ``.npy`` without pickles, expected shape and dtype,
  finite values); a bad block is named in a warning, removed and recomputed.
* Pruning: each ``cache_dir`` keeps the ``KEEP`` (3) most recently used keys (directory mtime;
  opening a cache touches it); older key directories (16 hex digits holding ``settings.json``)
  are removed when a cache is opened. Other files in ``cache_dir`` are never touched.
"""
import json
import os
import re
import shutil
import warnings

import numpy

from chainer_influence.devices import to_host
from chainer_influence.files import atomic_write, remove_stale_temporaries

KEEP = 3


class CacheKeyChangedWarning(UserWarning):
    """``cache_dir`` holds results for other inputs, which are not reused."""
_KEY_PATTERN = re.compile(r'^[0-9a-f]{16}$')


class ScoreCache(object):
    """Validated ``.npy`` store under ``cache_dir/<key>/``; a no-op when ``cache_dir`` is None.

    Args:
        cache_dir (str or None): the folder that holds one directory per key.
        key (str): 16 hex digits identifying the inputs.
        settings (dict): JSON-able description of the key, written to ``settings.json``.
        keep (int): key directories kept in ``cache_dir`` (the most recently used).
        part (str or None): a subfolder of the key directory for the blocks (e.g. one per MPI
            rank: ``rank0of2``); ``settings.json`` stays in the key directory.
    """

    def __init__(self, cache_dir, key, settings, keep=KEEP, part=None):
        self.directory = None
        if cache_dir is None:
            return
        root = os.path.join(cache_dir, key)
        self.directory = os.path.join(root, part) if part else root
        os.makedirs(self.directory, exist_ok=True)
        os.utime(root)  # most recently used
        remove_stale_temporaries(self.directory)
        path = os.path.join(root, 'settings.json')
        if not os.path.exists(path):
            atomic_write(path, lambda f: f.write(
                json.dumps(settings, sort_keys=True, indent=1, default=str).encode()))
        others = [d for d in _key_dirs(cache_dir) if d != key]
        pruned = prune(cache_dir, keep, current=key)
        if others:
            warnings.warn(CacheKeyChangedWarning(
                'cache_dir {} holds results for other training data, model, loss or settings '
                '({}); they are not reused: results for these inputs go to {}.{}'.format(
                    cache_dir, ', '.join(sorted(others)), key,
                    ' Removed the oldest: {} (keeping the {} most recent).'.format(
                        ', '.join(pruned), keep) if pruned else '')))

    def load(self, name, shape, dtype):
        """The array stored as ``name`` if it is valid, else None (a bad block is removed)."""
        if self.directory is None:
            return None
        path = os.path.join(self.directory, name + '.npy')
        if not os.path.exists(path):
            return None
        problem = None
        try:
            array = numpy.load(path, allow_pickle=False)
        except Exception as e:  # truncated, garbage, pickled: all unusable
            problem = 'unreadable ({}: {})'.format(type(e).__name__, e)
        else:
            if array.shape != tuple(shape):
                problem = 'shape {} instead of {}'.format(array.shape, tuple(shape))
            elif array.dtype != numpy.dtype(dtype):
                problem = 'dtype {} instead of {}'.format(array.dtype, numpy.dtype(dtype))
            elif not numpy.isfinite(array).all():
                problem = 'non-finite values'
        if problem is None:
            return array
        warnings.warn('cache block {} is invalid: {}; removed it and recomputing'.format(
            path, problem))
        os.remove(path)
        return None

    def save(self, name, array):
        if self.directory is not None:
            atomic_write(os.path.join(self.directory, name + '.npy'),
                         lambda f: numpy.save(f, to_host(array), allow_pickle=False))

    def load_arrays(self, name):
        """The dict of arrays stored as ``name`` (``.npz``), or None (an unreadable file is
        removed)."""
        if self.directory is None:
            return None
        path = os.path.join(self.directory, name + '.npz')
        if not os.path.exists(path):
            return None
        try:
            with numpy.load(path, allow_pickle=False) as stored:
                return {key: stored[key] for key in stored.files}
        except Exception as e:  # truncated, garbage, pickled: all unusable
            warnings.warn('cache file {} is unreadable ({}: {}); removed it and recomputing'
                          .format(path, type(e).__name__, e))
            os.remove(path)
            return None

    def save_arrays(self, name, arrays):
        """Store a dict of arrays as ``name`` (``.npz``)."""
        if self.directory is not None:
            atomic_write(os.path.join(self.directory, name + '.npz'), lambda f: numpy.savez(
                f, **{key: to_host(a) for key, a in arrays.items()}))


def prune(cache_dir, keep=KEEP, current=None):
    """Remove all but the ``keep`` most recently used key directories (never ``current``);
    returns the removed names."""
    dirs = sorted((d for d in _key_dirs(cache_dir) if d != current),
                  key=lambda d: os.path.getmtime(os.path.join(cache_dir, d)), reverse=True)
    removed = dirs[max(keep - (current is not None), 0):]
    for d in removed:
        shutil.rmtree(os.path.join(cache_dir, d), ignore_errors=True)
    return removed


def _key_dirs(cache_dir):
    if not os.path.isdir(cache_dir):
        return []
    return [d for d in os.listdir(cache_dir) if _KEY_PATTERN.match(d)
            and os.path.isfile(os.path.join(cache_dir, d, 'settings.json'))]
