from setuptools import find_packages, setup

setup(
    name='chainer-influence',
    version='0.1.0',
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
        'gpu': ['cupy'],
    },
)
