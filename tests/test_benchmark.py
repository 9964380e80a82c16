"""Smoke tests of benchmarks/run.py and benchmarks/kfac_speed.py on a tiny N: the JSON has the
documented keys and positive times.

No timing assertions: the numbers of a tiny run on a shared machine mean nothing.
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # spawned memory workers import benchmarks.scoring through this path too

from benchmarks import kfac_speed, run  # NOQA: E402

MODEL_KEYS = {'architecture', 'n_params', 'times_s', 'extrapolated', 'solvers', 'naive_check',
              'memory', 'profile', 'ratios', 'targets'}
TIME_KEYS = {'a', 'b1', 'b100', 'c', 'c_subset', 'b1_cg', 'b100_cg', 'b1_lissa', 'b100_lissa',
             'b1_ekfac', 'b100_ekfac', 'ekfac_fit', 'self_ekfac'}


def test_tiny_run_writes_documented_json(tmp_path, capsys):
    out = tmp_path / 'benchmark.json'
    run.main(['--n', '48', '--batch-size', '16', '--repeats', '1', '--naive-n', '4',
              '--cg-iters', '1', '--lissa-depth', '2', '--lissa-batch', '8',
              '--solver-budget', '5', '--random-data', '--out', str(out)])
    results = json.loads(out.read_text())
    assert {'command', 'settings', 'machine', 'models', 'wall_s'} <= set(results)
    assert results['machine']['cpu_count'] >= 1
    assert {'python', 'chainer', 'numpy'} <= set(results['machine'])
    assert set(results['models']) == {'mlp', 'cnn'}
    for section in results['models'].values():
        assert MODEL_KEYS <= set(section)
        assert TIME_KEYS <= set(section['times_s'])
        assert all(value > 0 for value in section['times_s'].values())
        assert {'b1_over_a', 'c_over_b1', 'b100_over_b1', 'b100_ekfac_over_a',
                'ekfac_fit_over_a'} <= set(section['ratios'])
        assert section['solvers']['ekfac']['factor_bytes'] > 0
        assert section['times_s']['ekfac_fit'] < section['times_s']['b100_ekfac']
        assert set(section['memory']) == {'n', '4n'}
        assert section['memory']['4n']['n_train'] == 4 * section['memory']['n']['n_train']
        assert all(m['tracemalloc_peak_mib'] > 0 for m in section['memory'].values())
        assert 'memory_growth_tracemalloc' in section['ratios']
        assert 'c' in section['extrapolated']
        check = section['naive_check']
        assert check['max_abs_diff'] <= 1e-3 * (1 + check['max_abs_score'])
    assert 'b1: influence' in capsys.readouterr().out


def test_kfac_speed_tiny_run(tmp_path):
    out = tmp_path / 'kfac.json'
    kfac_speed.main(['--n', '40', '--batch-size', '16', '--repeats', '1', '--random-data',
                     '--out', str(out)])
    results = json.loads(out.read_text())
    assert set(results['models']) == {'mlp', 'cnn'}
    for section in results['models'].values():
        assert set(section['times_s']) == {'epoch', 'fit', 'influence_100', 'self_influence',
                                           'pipeline'}
        assert all(value > 0 for value in section['times_s'].values())
        assert set(section['over_epoch']) == set(section['times_s']) - {'epoch'}
