"""Tracked parameters and the flat layout of the P axis.

Every flat vector in this library concatenates the raveled tracked parameters in the order that
``model.namedparams()`` gives them. :class:`ParameterSpace` owns that layout.
"""
import numpy

import chainer


def unwrap_model(model):
    """Return the Link whose parameters are differentiated.

    An ``L.Classifier`` is unwrapped to its ``.predictor``; names then match
    ``predictor.namedparams()`` (e.g. ``/l1/W``).
    """
    if isinstance(model, chainer.links.Classifier):
        return model.predictor
    return model


class ParameterSpace(object):
    """The tracked parameters of a model and their flat (P,) layout.

    Args:
        model (chainer.Link): the model (an ``L.Classifier`` is unwrapped).
        params (list of str or None): names as ``namedparams()`` gives them; None tracks all.
    """

    def __init__(self, model, params=None):
        model = unwrap_model(model)
        named = list(model.namedparams())
        if params is not None:
            wanted = list(params)
            known = {name for name, _ in named}
            unknown = [name for name in wanted if name not in known]
            if unknown:
                raise ValueError(
                    'unknown parameter names {}; the model has {}'.format(
                        unknown, sorted(known)))
            named = [(name, p) for name, p in named if name in set(wanted)]
        missing = [name for name, p in named if p.array is None]
        if missing:
            raise ValueError(
                'parameters {} are not initialised: run one forward pass first'.format(missing))
        if not named:
            raise ValueError('the model has no parameters to track')
        self.names = [name for name, _ in named]
        self.params = [p for _, p in named]
        self.shapes = [p.shape for p in self.params]
        self.sizes = [int(p.size) for p in self.params]
        self.offsets = numpy.concatenate([[0], numpy.cumsum(self.sizes)]).astype(int)
        self.size = int(self.offsets[-1])

    @property
    def xp(self):
        return chainer.backend.get_array_module(self.params[0].array)

    def index(self, name):
        return self.names.index(name)

    def slice(self, name):
        i = self.index(name)
        return slice(self.offsets[i], self.offsets[i + 1])

    def flatten(self, arrays, lead_shape=()):
        """Concatenate ``{name: (*lead, *shape)}`` (or a list in name order) into (*lead, P)."""
        if isinstance(arrays, dict):
            arrays = [arrays[name] for name in self.names]
        xp = chainer.backend.get_array_module(arrays[0])
        return xp.concatenate(
            [a.reshape(tuple(lead_shape) + (-1,)) for a in arrays], axis=-1)

    def unflatten(self, flat):
        """Split (*lead, P) into ``{name: (*lead, *shape)}`` (views, no copy)."""
        lead = flat.shape[:-1]
        if flat.shape[-1] != self.size:
            raise ValueError('expected last axis of size P={}, got {}'.format(
                self.size, flat.shape[-1]))
        return {name: flat[..., self.offsets[i]:self.offsets[i + 1]].reshape(lead + shape)
                for i, (name, shape) in enumerate(zip(self.names, self.shapes))}

    def per_parameter(self, rates):
        """A float stays a float; a dict ``{name: rate}`` becomes a (P,) vector holding each tracked
        parameter's rate over its entries (0 for names it lacks)."""
        if not isinstance(rates, dict):
            return float(rates)
        unknown = sorted(set(rates) - set(self.names))
        if unknown:
            raise ValueError('rates for untracked parameters {}; tracked: {}'.format(
                unknown, self.names))
        return self.xp.concatenate([
            self.xp.full(size, float(rates.get(name, 0.0)), dtype=p.dtype)
            for name, size, p in zip(self.names, self.sizes, self.params)])

    def values(self):
        """The current parameter values as a flat (P,) array."""
        return self.flatten([p.array for p in self.params])

    def set_values(self, flat):
        """Write a flat (P,) array back into the parameters (in place)."""
        for p, value in zip(self.params, self.unflatten(flat).values()):
            p.array[...] = value
