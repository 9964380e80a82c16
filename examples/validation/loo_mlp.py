"""Influence against leave-one-out retraining for a small MLP on scikit-learn's digits.

A float64 MLP 64-32-10 with tanh (2,410 parameters) on --n-train digits; the experiment is
described in network_loo.py. By default influence uses the exact (dense) Hessian (which picks the
removals), the exact Gauss-Newton, EK-FAC and K-FAC (on the Gauss-Newton), all with damping 0.01.
"""
import functools
import os
import sys

sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
import common  # NOQA: E402
import network_loo  # NOQA: E402


def main():
    parser = common.make_parser(__doc__, 'result/validation/loo_mlp', n_train=1000,
                                dataset='digits')
    parser.add_argument('--hidden', type=int, default=32, help='hidden units')
    network_loo.add_options(parser, n_test=5,
                            methods=('exact-h', 'exact-gn', 'ekfac-gn', 'kfac-gn'))
    args = parser.parse_args()
    n_in = 64 if args.dataset == 'digits' else 784
    network_loo.run(args, functools.partial(common.MLP, n_in, args.hidden),
                    'MLP {}-{}-10 on {}'.format(n_in, args.hidden, args.dataset))


if __name__ == '__main__':
    main()
