"""Atomic file writes: readers never see a half-written file.

A write goes to a temporary file ``.<name>.<random>.tmp`` next to the target, then ``os.replace``
moves it onto the target. A killed process can leave its temporary file behind; the next write of
the same target removes those untouched for ``STALE_TMP_SECONDS``.
"""
import os
import tempfile
import time

STALE_TMP_SECONDS = 60.0


def atomic_write(path, write, binary=True):
    """Call ``write(file)`` on a temporary file next to ``path``, then move it onto ``path``.

    If ``write`` raises (or the process dies), ``path`` keeps its previous content.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    prefix = '.' + os.path.basename(path) + '.'
    remove_stale_temporaries(directory, prefix)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix='.tmp')
    try:
        mode, encoding, newline = ('wb', None, None) if binary else ('w', 'utf-8', '')
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        os.remove(tmp)
        raise
    return path


def check_writable(directory):
    """Create ``directory`` if needed and prove it writable by creating and removing a temporary
    file; raise ``PermissionError``/``OSError`` with a message naming the folder otherwise."""
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix='.write-test.')
        os.close(fd)
        os.remove(tmp)
    except OSError as e:
        raise type(e)(e.errno, 'cannot write into the output folder {} ({}): choose another '
                      'out= or trainer out, or fix its permissions'.format(
                          os.path.abspath(directory), e.strerror or e)) from e


def remove_stale_temporaries(directory, prefix='.', age=STALE_TMP_SECONDS):
    """Remove ``<prefix>*.tmp`` files in ``directory`` not modified for ``age`` seconds."""
    limit = time.time() - age
    for name in os.listdir(directory):
        if name.startswith(prefix) and name.endswith('.tmp'):
            path = os.path.join(directory, name)
            try:
                if os.path.getmtime(path) < limit:
                    os.remove(path)
            except OSError:  # removed meanwhile by another process
                pass
