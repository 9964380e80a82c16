#!/usr/bin/env python
"""1 process against several (ChainerMN over MPI) for the passes over the training set that
dominate large runs: the influence scoring pass, the EK-FAC fit (factor pass + eigenvalue pass)
and one full-set Hessian-vector product with 10 vectors (what CG, power iterations and the dense
Hessian repeat).

For each process count it launches ``mpiexec -n <count>`` on this script (``--worker``); every
rank times each pass (best of ``--repeat``) and the time it spent inside collectives (allreduce,
gather: ``Shard.seconds``, which includes waiting for slower ranks). The table reports the slowest
rank's wall time, the speed-up over 1 process, the CPU-time speed-up (1-process CPU time / the
busiest rank's CPU time: the speed-up free cores would give, when other jobs share the machine)
and the communication share (collective time / wall time, slowest rank).

    python benchmarks/distributed.py --processes 1 2 --out result/distributed.json

Workload: benchmarks/common.py's 784-100-100-10 MLP (all 89,610 parameters, float32) on
Fashion-MNIST training images (``--n-train``), 10 test points (scoring contracts with 10 s_test
vectors); the HVP runs on the last layer only (``/l3/W``, ``/l3/b``: 1,010 parameters, as the
examples do for the Hessian).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def worker(args):
    import chainer
    import chainermn

    from benchmarks.common import MLP

    import chainer_influence as ci

    comm = chainermn.create_communicator('naive')
    train, test = ci.load_fashion_mnist(ndim=1)
    train = chainer.datasets.SubDataset(train, 0, args.n_train)
    test = chainer.dataset.concat_examples(test[:10])
    numpy.random.seed(0)

    model = MLP()
    calc = ci.InfluenceFunctions(model, train, solver=ci.EKFACSolver(progress=False), damping=1e-3,
                                 batch_size=args.batch_size, progress=False, comm=comm)
    s_test = numpy.random.RandomState(0).standard_normal((10, calc.space.size)).astype(
        numpy.float32)
    last = ci.InfluenceFunctions(model, train, solver=ci.CGSolver(), damping=1e-3,
                                 params=['/l3/W', '/l3/b'], batch_size=args.batch_size,
                                 progress=False, comm=comm)
    V = numpy.random.RandomState(1).standard_normal((10, last.space.size)).astype(numpy.float32)
    results = {}
    for name, run in (('scoring', lambda: calc.influence(test, s_test=s_test)),
                      ('ekfac_fit', lambda: ci.EKFACSolver(progress=False).fit(calc.curvature)),
                      ('hvp_last_layer', lambda: last.curvature.hvp(V))):
        shard = last.shard if name.startswith('hvp') else calc.shard
        best = None
        for _ in range(args.repeat):
            comm.mpi_comm.Barrier()
            shard.seconds = 0.0
            start, cpu = time.perf_counter(), time.process_time()
            run()
            wall = time.perf_counter() - start
            if best is None or wall < best[0]:
                best = (wall, shard.seconds, time.process_time() - cpu)
        times = comm.gather_obj(best)
        if comm.rank == 0:
            slowest = max(times)
            results[name] = {'seconds': slowest[0], 'comm_seconds': slowest[1],
                             'cpu_seconds': max(t[2] for t in times),
                             'per_rank': [list(t) for t in times]}
    if comm.rank == 0:
        with open(args.worker, 'w') as f:
            json.dump({'processes': comm.size,
                       'shard_sizes': [e - b for b, e in calc.shard.ranges],
                       'results': results}, f)


def launch(args):
    from chainer_influence.distributed import mpiexec_command
    env = dict(os.environ, OMP_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get('PYTHONPATH')]
                                                     if p]))
    runs = []
    for n in args.processes:
        with tempfile.NamedTemporaryFile(suffix='.json') as tmp:
            command = mpiexec_command(n) + [sys.executable, os.path.abspath(__file__),
                                            '--worker', tmp.name, '--n-train', str(args.n_train),
                                            '--batch-size', str(args.batch_size),
                                            '--repeat', str(args.repeat)]
            subprocess.run(command, env=env, check=True, timeout=3600)
            with open(tmp.name) as f:
                runs.append(json.load(f))
    base = {name: r for name, r in runs[0]['results'].items()}
    rows = []
    for run in runs:
        for name, r in run['results'].items():
            r['speedup'] = base[name]['seconds'] / r['seconds']
            r['cpu_speedup'] = base[name]['cpu_seconds'] / r['cpu_seconds']
            r['comm_share'] = r['comm_seconds'] / r['seconds']
            rows.append((name, run['processes'], r['seconds'], r['speedup'], r['cpu_speedup'],
                         r['comm_share']))
    report = {'n_train': args.n_train, 'batch_size': args.batch_size, 'repeat': args.repeat,
              'load_average': os.getloadavg(), 'cpus': os.cpu_count(), 'runs': runs}
    print('| pass | processes | seconds | speed-up | CPU-time speed-up | communication share |')
    print('|---|---|---|---|---|---|')
    for name, n, seconds, speedup, cpu_speedup, share in sorted(rows):
        print('| {} | {} | {:.2f} | {:.2f}x | {:.2f}x | {:.1%} |'.format(
            name, n, seconds, speedup, cpu_speedup, share))
    print('(N={}, batch {}, best of {}; {} CPUs, load average {:.1f} at the end)'.format(
        args.n_train, args.batch_size, args.repeat, os.cpu_count(), os.getloadavg()[0]))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(report, f, indent=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--processes', type=int, nargs='+', default=[1, 2],
                        help='process counts; the first is the speed-up baseline')
    parser.add_argument('--n-train', type=int, default=10000, help='training examples')
    parser.add_argument('--batch-size', type=int, default=500, help='examples per pass batch')
    parser.add_argument('--repeat', type=int, default=2, help='best of this many runs')
    parser.add_argument('--out', default='result/distributed.json', help='JSON report')
    parser.add_argument('--worker', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
    else:
        launch(args)


if __name__ == '__main__':
    main()
