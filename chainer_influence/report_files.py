"""Writing an extension run's files: each writer and figure fails on its own, and a failed run
leaves ``error.json`` with the traceback."""
import json
import os
import time
import traceback

from chainer_influence.files import atomic_write


def describe(writer):
    """A writer's or figure's name for messages: its filename, else its type or function name."""
    filename = getattr(writer, 'filename', None)
    if filename is not None:
        return '{}({})'.format(type(writer).__name__, filename)
    return getattr(writer, '__name__', type(writer).__name__)


def failure(what, error):
    """A JSON-ready record of ``error`` (being handled now) raised by ``what``."""
    return {'what': what, 'error': '{}: {}'.format(type(error).__name__, error),
            'traceback': traceback.format_exc()}


def summary(failures):
    """One line naming every failure: ``what: error; what: error``."""
    return '; '.join('{}: {}'.format(f['what'], f['error']) for f in failures)


def write_all(report, out_dir, writers):
    """Call every ``writer(report, out_dir)``; one failing does not stop the others.

    Returns ``(paths, failures)``: the paths written (None results left out) and one
    :func:`failure` record per writer that raised.
    """
    paths, failures = [], []
    for writer in writers:
        try:
            path = writer(report, out_dir)
        except Exception as e:
            failures.append(failure(describe(writer), e))
        else:
            if path is not None:
                paths.append(path)
    return paths, failures


def write_error(out_dir, failures, iteration=None, epoch=None):
    """Write ``out_dir/error.json``: when and what failed, with tracebacks; returns its path."""
    doc = {'time': time.strftime('%Y-%m-%d %H:%M:%S'), 'iteration': iteration, 'epoch': epoch,
           'failures': failures}
    return atomic_write(os.path.join(out_dir, 'error.json'),
                        lambda f: (json.dump(doc, f, indent=1), f.write('\n')), binary=False)


def remove_error(out_dir):
    """Remove a stale ``out_dir/error.json`` (a later run succeeded)."""
    try:
        os.remove(os.path.join(out_dir, 'error.json'))
    except FileNotFoundError:
        pass
