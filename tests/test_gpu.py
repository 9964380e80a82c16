"""The same numbers on a CUDA device as on the CPU. Skipped where CuPy or a GPU is missing."""
import numpy
import pytest

import chainer

import chainer_influence as ci

from digits_models import WEIGHT_DECAY, TinyMLP, digits

cupy = pytest.importorskip('cupy')
try:
    DEVICE = chainer.get_device('@cupy:0')
except Exception as e:  # CuPy installed but no usable GPU
    pytest.skip('no CUDA device: {}'.format(e), allow_module_level=True)


def _pair():
    numpy.random.seed(0)
    train, test = digits(200, 3, dtype=numpy.float32)
    cpu = TinyMLP()
    cpu(train[0][:1])
    gpu = cpu.copy(mode='copy')
    gpu.to_device(DEVICE)
    return cpu, gpu, train, test


def test_per_sample_gradients_on_gpu_match_cpu():
    cpu, gpu, train, _ = _pair()
    batch = (train[0][:16], train[1][:16])
    want = ci.per_sample_gradients(cpu, ci.softmax_cross_entropy_loss, batch, flat=True)
    got = ci.per_sample_gradients(gpu, ci.softmax_cross_entropy_loss,
                                  tuple(DEVICE.send(a) for a in batch), flat=True)
    numpy.testing.assert_allclose(cupy.asnumpy(got), want, rtol=1e-4, atol=1e-6)


def test_influence_on_gpu_matches_cpu():
    cpu, gpu, train, test = _pair()
    kwargs = dict(solver=ci.ExactSolver(), damping=0.5, weight_decay=WEIGHT_DECAY,
                  progress=False)
    want = ci.InfluenceFunctions(cpu, train, **kwargs).influence(test)
    got = ci.InfluenceFunctions(gpu, train, device=DEVICE, **kwargs).influence(test)
    assert isinstance(got, numpy.ndarray)
    numpy.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * numpy.abs(want).max())
