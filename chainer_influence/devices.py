"""Device helpers: moving arrays to the host and finding the model's device."""
import numpy

import chainer


def to_host(array, dtype=None):
    """``array`` (numpy, cupy or a list) as a numpy array; None stays None."""
    if array is None:
        return None
    return numpy.asarray(chainer.backend.CpuDevice().send(array), dtype=dtype)


def model_device(model, device=None):
    """The Chainer device of ``model``'s parameters; ``device``, when given, must be that one."""
    model_device = chainer.backend.get_device_from_array(next(iter(model.params())).array)
    if device is None:
        return model_device
    device = chainer.get_device(device)
    if device != model_device:
        raise ValueError('the model is on {} but device={}: move it with '
                         'model.to_device({!r}) first'.format(model_device, device, str(device)))
    return device
