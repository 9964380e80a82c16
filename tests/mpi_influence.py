"""Run under ``mpiexec -n 2`` by tests/test_distributed.py: every multi-process computation in one
launch, results written by rank 0 to OUT_DIR and compared with single-process runs in pytest.

    mpiexec -n 2 python tests/mpi_influence.py OUT_DIR
"""
import json
import os
import shutil
import sys

import numpy

import chainer
import chainermn

import chainer_influence as ci

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from distributed_problem import (BATCH_SIZE, SOLVERS, WEIGHT_DECAY, CountingDataset,  # NOQA
                                 extension_trainer, make_solver, problem)


def scores(comm, model, train, test, name, scale):
    calc = ci.InfluenceFunctions(model, train, solver=make_solver(name, scale),
                                 weight_decay=WEIGHT_DECAY, batch_size=BATCH_SIZE, progress=False,
                                 comm=comm)
    s = calc.s_test(test)
    s_all = comm.gather_obj(chainer.backend.CpuDevice().send(s))
    found = {name + '/influence': calc.influence(test, s_test=s),
             name + '/self_influence': calc.self_influence()}
    if name == 'exact':  # RelatIF divides by the (gathered) self-influence on rank 0
        found[name + '/relatif'] = calc.influence(test, s_test=s, normalize='relatif')
    found[name + '/s_test_same_on_ranks'] = (
        all((a == s_all[0]).all() for a in s_all) if comm.rank == 0 else None)
    return calc, found


def reads(comm, model, train, test):
    """Training examples each rank reads in one scoring pass, one full-set HVP and one EK-FAC
    fit."""
    counting = CountingDataset(train)
    calc = ci.InfluenceFunctions(model, counting, solver=ci.ExactSolver(),
                                 weight_decay=WEIGHT_DECAY, batch_size=BATCH_SIZE, progress=False,
                                 comm=comm)
    s = numpy.random.RandomState(0).standard_normal((len(test[0]), calc.space.size))
    counting.count = 0
    calc.influence(test, s_test=s)
    scoring = counting.count
    counting.count = 0
    calc.curvature.hvp(s)
    found = {'scoring': scoring, 'hvp': counting.count, 'shard': len(calc.shard)}
    if 'ekfac' in SOLVERS:
        counting.count = 0
        ci.EKFACSolver(progress=False).fit(calc.curvature)  # factor pass + eigenvalue pass
        found['ekfac_fit'] = counting.count
    return found


def resume(comm, model, train, test, cache_dir):
    """Cache blocks per rank: a second run loads them; a rank whose block is gone recomputes
    it alone (reading only its shard) while the other rank reads nothing."""
    def run():
        counting = CountingDataset(train)
        calc = ci.InfluenceFunctions(model, counting, solver=ci.ExactSolver(),
                                     weight_decay=WEIGHT_DECAY, batch_size=BATCH_SIZE,
                                     progress=False, cache_dir=cache_dir, comm=comm)
        calc.s_test(test)  # loads s_test (after the first run) and fingerprints the cache
        counting.count = 0
        return calc.influence(test), counting.count

    first, _ = run()
    comm.mpi_comm.Barrier()
    key, = os.listdir(cache_dir)
    part = os.path.join(cache_dir, key, 'rank{}of{}'.format(comm.rank, comm.size))
    files = sorted(os.listdir(part))
    comm.mpi_comm.Barrier()
    if comm.rank == 1:
        for name in files:
            if name.startswith('scores_'):
                os.remove(os.path.join(part, name))
    comm.mpi_comm.Barrier()
    second, reads = run()
    return {'files': files, 'reads': reads, 'first': first, 'second': second}


def main(out_dir):
    comm = chainermn.create_communicator('naive')
    chainermn.global_except_hook.add_hook()  # an error on one rank aborts all (no hang)
    model, train, test = problem()
    results = {}
    calc, found = scores(comm, model, train, test, 'exact', None)
    results.update(found)
    scale = 2.0 * calc.solver.diagnostics['eigenvalue_max']
    for name in SOLVERS[1:]:
        results.update(scores(comm, model, train, test, name, scale)[1])
    counts = comm.gather_obj(reads(comm, model, train, test))
    cache_dir = os.path.join(out_dir, 'cache')
    if comm.rank == 0:
        shutil.rmtree(cache_dir, ignore_errors=True)
    comm.mpi_comm.Barrier()
    resumed = comm.gather_obj(resume(comm, model, train, test, cache_dir))

    trainer = extension_trainer(os.path.join(out_dir, 'ext', 'rank{}'.format(comm.rank)), comm)
    trainer.run()
    folder = os.path.join(trainer.out, 'influence')
    written = comm.gather_obj(sorted(os.listdir(folder)) if os.path.isdir(folder) else [])

    if comm.rank == 0:
        arrays = {k: v for k, v in results.items() if isinstance(v, numpy.ndarray)}
        arrays['lissa_scale'] = numpy.float64(scale)
        arrays['params'] = calc.space.values()
        for r, found in enumerate(resumed):
            arrays['resume/first/rank{}'.format(r)] = numpy.asarray(
                found['first'] if r == 0 else 0.0)
            arrays['resume/second/rank{}'.format(r)] = numpy.asarray(
                found['second'] if r == 0 else 0.0)
        numpy.savez(os.path.join(out_dir, 'scores.npz'), **arrays)
        facts = {'size': comm.size,
                 's_test_same_on_ranks': {k: v for k, v in results.items()
                                          if k.endswith('same_on_ranks')},
                 'reads': counts,
                 'cache_files': [found['files'] for found in resumed],
                 'resume_reads': [found['reads'] for found in resumed],
                 'resume_none_on_rank1': resumed[1]['first'] is None,
                 'extension_files': written}
        with open(os.path.join(out_dir, 'facts.json'), 'w') as f:
            json.dump(facts, f, indent=1)
    else:
        # the gathered score arrays live on rank 0 only
        assert all(v is None for k, v in results.items() if not k.endswith('same_on_ranks'))
    comm.mpi_comm.Barrier()


if __name__ == '__main__':
    main(sys.argv[1])
