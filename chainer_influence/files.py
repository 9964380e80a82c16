"""Atomic file writes: readers never see a half-written file."""
import os
import tempfile


def atomic_write(path, write, binary=True):
    """Call ``write(file)`` on a temporary file next to ``path``, then move it onto ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + os.path.basename(path) + '.',
                               suffix='.tmp')
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
