"""A minimal progress bar for long influence runs, in the style of Chainer's ProgressBar."""
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
        self.stream.write('\r{} [{}{}] {}/{} {:.1f}/s ETA {:.0f}s   '.format(
            self.title, '#' * filled, '.' * (self.width - filled), self.done, self.total,
            rate, eta))
        self.stream.flush()
