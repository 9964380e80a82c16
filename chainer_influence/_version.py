"""The package version: the one place setup.py and ``chainer_influence.__version__`` read."""
__version__ = '0.1.0'
