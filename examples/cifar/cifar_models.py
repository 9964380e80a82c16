"""Small CIFAR-10 classifiers whose last layer is a Linear named ``fc``.

Both models take raw pixels (3, 32, 32) in [0, 1], as :func:`chainer_influence.load_cifar10`
returns them, and standardise them inside ``forward`` with CIFAR-10's per-channel mean and
standard deviation. The data thus stay in [0, 1], which the influence figures show as they are.

Last-layer influence tracks ``/fc/W`` and ``/fc/b`` (:data:`LAST_LAYER`): P = n_classes *
(features + 1) parameters, e.g. 10 * (64 + 1) = 650 for the default ResNet.
"""
import numpy

import chainer
import chainer.functions as F
import chainer.links as L

LAST_LAYER = ['/fc/W', '/fc/b']

# Per-channel statistics of the CIFAR-10 training images (pixels in [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class Standardize(chainer.Link):
    """``(x - mean) / std`` per channel; the statistics are persistent values, not parameters."""

    def __init__(self, mean=CIFAR10_MEAN, std=CIFAR10_STD):
        super().__init__()
        self.add_persistent('mean', numpy.asarray(mean, numpy.float32).reshape(1, -1, 1, 1))
        self.add_persistent('std', numpy.asarray(std, numpy.float32).reshape(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean.astype(x.dtype)) / self.std.astype(x.dtype)


class ConvBN(chainer.Chain):
    """3x3 (or ``ksize``) convolution without bias, then BatchNormalization."""

    def __init__(self, n_in, n_out, ksize=3, stride=1):
        super().__init__()
        with self.init_scope():
            self.conv = L.Convolution2D(n_in, n_out, ksize, stride=stride, pad=ksize // 2,
                                        nobias=True, initialW=chainer.initializers.HeNormal())
            self.bn = L.BatchNormalization(n_out)

    def forward(self, x):
        return self.bn(self.conv(x))


class BasicBlock(chainer.Chain):
    """relu(x + bn(conv(relu(bn(conv(x)))))); a 1x1 convolution + BN shortcut where the shape
    changes (``stride`` 2 or a new width)."""

    def __init__(self, n_in, n_out, stride=1):
        super().__init__()
        with self.init_scope():
            self.a = ConvBN(n_in, n_out, stride=stride)
            self.b = ConvBN(n_out, n_out)
            if stride != 1 or n_in != n_out:
                self.shortcut = ConvBN(n_in, n_out, ksize=1, stride=stride)

    def forward(self, x):
        h = self.b(F.relu(self.a(x)))
        skip = self.shortcut(x) if hasattr(self, 'shortcut') else x
        return F.relu(h + skip)


class ResNet(chainer.Chain):
    """A small CIFAR ResNet (He et al. 2016, Sec. 4.2): a 3x3 stem, three stages of
    ``n_blocks`` basic blocks at widths (w, 2w, 4w) and resolutions 32, 16, 8, global average
    pooling and ``fc``. ``n_blocks=3, width=16`` is ResNet-20; the defaults (1, 16) make a
    ResNet-8 with about 78,000 parameters.
    """

    def __init__(self, n_out=10, width=16, n_blocks=1):
        super().__init__()
        widths = (width, 2 * width, 4 * width)
        with self.init_scope():
            self.standardize = Standardize()
            self.stem = ConvBN(3, width)
            self.stages = chainer.ChainList(*[
                chainer.Sequential(*[
                    BasicBlock(widths[max(s - 1, 0)] if b == 0 else w, w,
                               stride=2 if s > 0 and b == 0 else 1)
                    for b in range(n_blocks)])
                for s, w in enumerate(widths)])
            self.fc = L.Linear(widths[-1], n_out)

    def forward(self, x):
        h = F.relu(self.stem(self.standardize(x)))
        for stage in self.stages:
            h = stage(h)
        return self.fc(F.mean(h, axis=(2, 3)))


class VGG(chainer.Chain):
    """A VGG-style CNN (Simonyan & Zisserman 2015) without BatchNormalization: three stages of
    two 3x3 convolutions (with bias) + ReLU and 2x2 max pooling at widths (w, 2w, 4w), then
    ``fc1`` (``n_hidden`` units, ReLU, dropout while training) and ``fc``. The defaults
    (width 16, 128 hidden units) make about 200,000 parameters.
    """

    def __init__(self, n_out=10, width=16, n_hidden=128, dropout=0.5):
        super().__init__()
        widths = (width, width, 2 * width, 2 * width, 4 * width, 4 * width)
        self.dropout = dropout
        with self.init_scope():
            self.standardize = Standardize()
            self.convs = chainer.ChainList(*[
                L.Convolution2D(n_in, n_out_, 3, pad=1, initialW=chainer.initializers.HeNormal())
                for n_in, n_out_ in zip((3,) + widths[:-1], widths)])
            self.fc1 = L.Linear(4 * width * 4 * 4, n_hidden)
            self.fc = L.Linear(n_hidden, n_out)

    def forward(self, x):
        h = self.standardize(x)
        for i, conv in enumerate(self.convs):
            h = F.relu(conv(h))
            if i % 2 == 1:
                h = F.max_pooling_2d(h, 2)
        h = F.dropout(F.relu(self.fc1(h)), self.dropout)
        return self.fc(h)


ARCHS = {'resnet': ResNet, 'vgg': VGG}
