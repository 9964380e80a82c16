"""Koh & Liang (2017) Fig. 2 right: influence against leave-one-out retraining for a small CNN.

A float64 CNN of 2,410 parameters (conv 5x5/2 -> 4 channels, tanh, conv 3x3/2 -> 8 channels, tanh,
linear 200 -> 10) on a Fashion-MNIST subset; the experiment is described in network_loo.py. By
default influence uses CG on the Hessian (which picks the removals), CG on the Gauss-Newton,
EK-FAC and K-FAC (on the Gauss-Newton), all with damping 0.01.

The network is not convex: at the trained parameters H has eigenvalues far below the weight decay,
so the result depends on the damping and on how far retraining goes (see RESULTS.md).
"""
import os
import sys

sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
import common  # NOQA: E402
import network_loo  # NOQA: E402


def main():
    parser = common.make_parser(__doc__, 'result/validation/loo_cnn', n_train=500)
    network_loo.add_options(parser, n_test=3, methods=('cg-h', 'cg-gn', 'ekfac-gn', 'kfac-gn'))
    args = parser.parse_args()
    if args.dataset != 'fashion-mnist':
        raise SystemExit('the CNN expects 28x28 Fashion-MNIST images')
    network_loo.run(args, common.SmallCNN, 'small CNN (Koh & Liang Fig. 2 right)')


if __name__ == '__main__':
    main()
