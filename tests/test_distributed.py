"""Two MPI processes (ChainerMN) give the single-process results.

One ``mpiexec -n 2`` launch runs tests/mpi_influence.py, which computes everything on the problem
of tests/distributed_problem.py and writes rank 0's results; the tests compare them with the same
computations in this process. Skips (with the reason) only when MPI cannot start here.
"""
import json
import os
import subprocess
import sys

import numpy
import pytest

import chainer_influence as ci
from chainer_influence.distributed import mpiexec_command

from distributed_problem import (BATCH_SIZE, N_TRAIN, SOLVERS, WEIGHT_DECAY,
                                 extension_trainer, make_solver, problem)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RTOL = 1e-5


def _env():
    env = dict(os.environ, OMP_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1')
    env['PYTHONPATH'] = os.pathsep.join([ROOT, HERE] + [p for p in [env.get('PYTHONPATH')] if p])
    return env


@pytest.fixture(scope='module')
def mpi_results(tmp_path_factory):
    probe = mpiexec_command(2) + [sys.executable, '-c', 'import mpi4py.MPI, chainermn']
    try:
        done = subprocess.run(probe, env=_env(), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip('MPI cannot start here ({}); install the mpi extra: pip install '
                    '-e .[mpi]'.format(e))
    if done.returncode != 0:
        pytest.skip('MPI cannot start here: {} -> {}'.format(
            ' '.join(probe), (done.stderr or done.stdout).strip()[-500:]))
    out = str(tmp_path_factory.mktemp('mpi'))
    run = subprocess.run(mpiexec_command(2) + [sys.executable, os.path.join(HERE,
                                                                            'mpi_influence.py'),
                                                out],
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with open(os.path.join(out, 'facts.json')) as f:
        facts = json.load(f)
    return out, dict(numpy.load(os.path.join(out, 'scores.npz'))), facts


@pytest.fixture(scope='module')
def single():
    model, train, test = problem()
    return model, train, test


def _close(a, b):
    scale = numpy.abs(b).max()
    return numpy.abs(a - b).max() <= RTOL * scale


@pytest.mark.parametrize('name', SOLVERS)
def test_two_processes_give_single_process_scores(mpi_results, single, name):
    _, arrays, facts = mpi_results
    model, train, test = single
    assert (ci.ParameterSpace(model).values() == arrays['params']).all()
    calc = ci.InfluenceFunctions(model, train, solver=make_solver(name, float(arrays['lissa_scale'])),
                                 weight_decay=WEIGHT_DECAY, batch_size=BATCH_SIZE,
                                 progress=False)
    influence = calc.influence(test)
    self_influence = calc.self_influence()
    got = arrays[name + '/influence']
    assert got.shape == influence.shape == (len(test[0]), N_TRAIN)
    assert _close(got, influence), numpy.abs(got - influence).max()
    assert arrays[name + '/self_influence'].shape == (N_TRAIN,)
    assert _close(arrays[name + '/self_influence'], self_influence)
    assert facts['s_test_same_on_ranks'][name + '/s_test_same_on_ranks'] is True
    if name == 'exact':
        relatif = calc.influence(test, normalize='relatif')
        assert _close(arrays['exact/relatif'], relatif)


def test_each_rank_reads_its_shard(mpi_results):
    _, _, facts = mpi_results
    shards = [r['shard'] for r in facts['reads']]
    assert shards == [30, 31]
    for r in facts['reads']:
        assert r['scoring'] == r['shard']  # one scoring pass: exactly the rank's examples
        assert r['hvp'] == r['shard']      # one full-set Hessian-vector product
        if 'ekfac' in SOLVERS:  # two passes over whole global batches: 2 and 3 of them
            assert r['ekfac_fit'] == 2 * r['shard']


def test_cache_is_per_rank_and_resumes_per_rank(mpi_results):
    _, arrays, facts = mpi_results
    rank0, rank1 = facts['cache_files']
    assert any(f.startswith('scores_') and f.endswith('_0_30.npy') for f in rank0), rank0
    assert any(f.startswith('scores_') and f.endswith('_30_61.npy') for f in rank1), rank1
    assert any(f.startswith('s_test_') for f in rank1)
    # rank 1 lost its score block: it alone recomputes it, reading only its shard
    assert facts['resume_reads'] == [0, 31]
    assert facts['resume_none_on_rank1']
    numpy.testing.assert_array_equal(arrays['resume/first/rank0'], arrays['resume/second/rank0'])


def test_extension_rankings_equal_between_one_and_two_processes(mpi_results, tmp_path):
    out, _, facts = mpi_results
    assert 'rankings.json' in facts['extension_files'][0]
    assert 'top_influential.png' in facts['extension_files'][0]
    assert not any(f.startswith('rankings') or f.endswith('.png')
                   for f in facts['extension_files'][1])  # rank 1 writes nothing
    trainer = extension_trainer(str(tmp_path))
    trainer.run()
    with open(os.path.join(str(tmp_path), 'influence', 'rankings.json')) as f:
        one = json.load(f)
    with open(os.path.join(out, 'ext', 'rank0', 'influence', 'rankings.json')) as f:
        two = json.load(f)
    assert one['settings'] == two['settings']
    for a, b in zip(one['test_points'], two['test_points']):
        for kind in ('helpful', 'harmful'):
            assert [e['train_index'] for e in a[kind]] == [e['train_index'] for e in b[kind]]
            numpy.testing.assert_allclose([e['score'] for e in a[kind]],
                                          [e['score'] for e in b[kind]], rtol=1e-9)
        assert {k: v for k, v in a.items() if k not in ('helpful', 'harmful')} == \
            {k: v for k, v in b.items() if k not in ('helpful', 'harmful')}
