#!/usr/bin/env python
"""ChainerMN version of train_mnist.py (the same flags, plus --communicator): data-parallel
training over MPI processes, then influence rankings computed by all of them.

Every process loads the FULL training set (the Fashion-MNIST IDX files are read from disk);
``scatter_dataset`` gives each one a part for the updater, the multi-node optimizer averages the
gradients, and ``InfluenceExtension`` takes the communicator from that optimizer: each process
scores its contiguous shard of the training set, Hessian-vector products are summed across
processes, and rank 0 alone writes ``<out>/influence/`` (the same files as train_mnist.py) and
the log. ``--batchsize`` is per process, as in ChainerMN's examples.

    mpiexec -n 2 python examples/mnist/train_mnist_mn.py --arch mlp
    mpiexec -n 8 --hostfile hosts python examples/mnist/train_mnist_mn.py --arch cnn
"""
import os
import sys

import chainer
import chainer.links as L
from chainer.training import extensions
import chainermn

sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
sys.path.insert(1, os.path.dirname(os.path.abspath(__file__)))
import chainer_influence as ci  # NOQA: E402
from examples import common  # NOQA: E402
from train_mnist import ARCHS, SOLVERS, load, make_parser  # NOQA: E402


def parse_args(argv=None):
    parser = make_parser(__doc__, out='result/mnist_mn')
    parser.add_argument('--communicator', default='naive',
                        help='ChainerMN communicator: naive on CPUs, pure_nccl on GPUs (then '
                             '--device @cupy uses the GPU of each process\'s intra-node rank)')
    args = parser.parse_args(argv)
    if args.tracin:
        parser.error('--tracin runs in one process only (TracInExtension has no communicator)')
    return args


def main(argv=None):
    args = parse_args(argv)
    comm = chainermn.create_communicator(args.communicator)
    chainermn.global_except_hook.add_hook()  # an error on one process stops all (no hang)
    if args.device == '@cupy':
        args.device = '@cupy:{}'.format(comm.intra_rank)
    device = common.setup(args)
    train, test = load(args)  # the full sets, on every process
    if comm.rank == 0:
        print('{} processes, {} training images, {} per process per epoch'.format(
            comm.size, len(train), -(-len(train) // comm.size)))
    model = L.Classifier(ARCHS[args.arch]())
    with chainer.using_config('train', False):
        model.predictor(test[0][0][None])  # initialise lazy parameters
    model.to_device(device)

    optimizer = chainermn.create_multi_node_optimizer(common.make_optimizer(model, args), comm)
    train_local = chainermn.scatter_dataset(train, comm, shuffle=True, seed=args.seed)
    trainer = common.make_trainer(model, train_local, None, args, device, optimizer=optimizer,
                                  log=comm.rank == 0)
    test_iter = chainer.iterators.SerialIterator(chainermn.scatter_dataset(test, comm), 1000,
                                                 repeat=False, shuffle=False)
    trainer.extend(chainermn.create_multi_node_evaluator(
        extensions.Evaluator(test_iter, model, device=device), comm))

    scope = args.influence_params or ('all' if args.arch == 'logreg' else 'last')
    trainer.extend(ci.InfluenceExtension(  # train: the FULL set; each process scores its shard
        train, test, test_indices=args.test_indices, top_k=args.top_k,
        solver=SOLVERS[args.solver](), curvature=args.curvature,
        params=None if scope == 'all' else ['/fc/W', '/fc/b'], damping=args.damping,
        self_influence=not args.no_self_influence, batch_size=args.influence_batchsize,
        class_names=list(ci.CLASS_NAMES[args.dataset]), progress=not args.no_progress,
        normalize='relatif' if args.relatif else None))
    if comm.rank == 0:
        common.add_print_report(trainer, [
            'epoch', 'main/loss', 'main/accuracy', 'validation/main/loss',
            'validation/main/accuracy', 'influence/time', 'elapsed_time'], args)
    trainer.run()
    if comm.rank == 0:
        common.print_influence_outcome(args.out)


if __name__ == '__main__':
    main()
