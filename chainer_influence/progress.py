"""Progress of long influence runs, in the style of Chainer's ``ProgressBar``.

One :class:`ProgressDisplay` serves a whole run: every phase (the Hessian, power iterations, the
solve, scoring) draws its own bar line through it and ends that line when done, so the phases
stack up one under another. Off when not on a terminal, and everywhere with ``enabled=False``.
"""
import sys
import time


class Progress(object):
    """Prints ``title [#####.....] done/total  rate  ETA`` to ``stream`` (stderr).

    Off when ``enabled`` is False or, with ``enabled='auto'`` (and True), when the stream is not a
    terminal, so logs and CI output stay clean. Use as a context manager; call ``update(n)``.
    """

    def __init__(self, total, title='', enabled=True, stream=None, width=30, interval=0.5):
        self.stream = stream or sys.stderr
        isatty = getattr(self.stream, 'isatty', lambda: False)()
        self.enabled = bool(enabled) and isatty
        self.total = max(int(total), 1)
        self.title = title
        self.width = width
        self.interval = interval
        self.done = 0
        self._start = self._last = time.time()

    def __enter__(self):
        if self.enabled:
            # Chainer's ProgressBar leaves the cursor at the top of its block: clear that block
            # (it redraws itself) rather than draw over it
            self.stream.write('\r\033[J')
            self._draw(force=True)
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self._draw(force=True)
            self.stream.write('\n')
            self.stream.flush()
        return False

    def update(self, n=1):
        self.done += n
        if self.enabled:
            self._draw()

    def _draw(self, force=False):
        now = time.time()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        fraction = min(self.done / float(self.total), 1.0)
        filled = int(self.width * fraction)
        rate = self.done / max(now - self._start, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else float('inf')
        self.stream.write('\r{:>16} [{}{}] {}/{} {:.1f}/s ETA {:.0f}s   '.format(
            self.title, '#' * filled, '.' * (self.width - filled), self.done, self.total,
            rate, eta))
        self.stream.flush()


class ProgressDisplay(object):
    """The progress display of one influence run: ``phase(title, total)`` gives a
    :class:`Progress` bar for one phase on its own line.

    Args:
        enabled (bool): False silences every phase (and every solver that draws through it).
        stream: where to draw (default stderr); nothing is drawn unless it is a terminal.
    """

    def __init__(self, enabled=True, stream=None):
        self.enabled = bool(enabled)
        self.stream = stream

    def phase(self, title, total, enabled=True):
        """A :class:`Progress` for ``total`` steps; ``enabled=False`` (e.g. a solver's own
        ``progress=False``) silences this phase only."""
        return Progress(total, title, enabled=self.enabled and enabled, stream=self.stream)


QUIET = ProgressDisplay(enabled=False)
