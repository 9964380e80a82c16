"""Benchmarks of chainer_influence (run ``python benchmarks/run.py --help``)."""
