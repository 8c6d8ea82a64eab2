"""Train the DeepOBS MNIST MLP or CIFAR-10 3c3d CNN with a torch_opt optimizer.

    python train_torch.py -dataset mnist -optimizer adam -num_epochs 3
    python train_torch.py -num_epochs 100 -dataset cifar -num_train 16384 -data_dir ../shared/data

Takes the same flags as train_jax.py (``jax_train.train``, this module's mirror image); with the
same seed both start from the same weights, see the same batches in the same order and follow
the same trajectory (parity_tests). Checkpoints: ``torch_train.checkpoints``.
"""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

import torch_opt
from torch_train.checkpoints import checkpoint_bytes, load_checkpoint
from torch_train.models import build_model
from twinopt import cli, data, runs, training
from twinopt.models import MODELS
from twinopt.schedules import lr_factor


def make_optimizer(args, model, total_steps):
    opt = torch_opt.OPTIMIZERS[args.optimizer](model.parameters(), **args.optimizer_kwargs, foreach=True)
    if args.lookahead:
        opt = torch_opt.Lookahead(opt, k=args.lookahead_k, alpha=args.lookahead_alpha, foreach=True)
    scheduler = None
    if args.schedule != "constant":
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(args.schedule, step, total_steps))
    return opt, scheduler


# ---- devices and processes ----------------------------------------------------------------------


def init_distributed(args):
    """(rank, world size): under ``torchrun --nproc_per_node N`` a gloo process group (the script
    trains on the CPU), else (0, 1). Each rank takes its slice of every global batch."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if args.batch_size % world:
        raise SystemExit(f"error: -batch_size {args.batch_size} does not split over {world} processes; choose a "
                         f"multiple of {world}.")
    if not dist.is_initialized():  # a caller may have made the group (and then ends it)
        dist.init_process_group("gloo")
    if dist.get_rank():  # one process reports
        sys.stdout = open(os.devnull, "w")
        args.no_progress = True
    return dist.get_rank(), world


def host_rows(rank, world, size):
    """The rows of a batch of ``size`` that this process trains on (all, with one process)."""
    return slice(rank * size // world, (rank + 1) * size // world)


def global_sum(value, world):
    """The sum over the processes (a tensor); the value itself in a single process."""
    if world > 1:
        value = value.detach().clone()
        dist.all_reduce(value)
    return value


def stop_requested(stop, step, world):
    """Whether to stop after this step; in a multi-process run, if any process was asked to (all
    stop together: a collective, so a sync of the processes every step)."""
    return bool(global_sum(torch.tensor(stop.requested(step), dtype=torch.int32), world))


# ---- steps --------------------------------------------------------------------------------------


def train_step(net, opt, scheduler, x, y):
    """Forward, backward and update (and the lr scheduler's step); ``(loss, correct)`` of the batch."""
    opt.zero_grad(set_to_none=True)
    logits = net(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    opt.step()
    if scheduler is not None:
        scheduler.step()
    return loss, (logits.argmax(1) == y).sum()


@torch.no_grad()
def evaluate(model, x, y, args, dtype):
    """(mean loss, accuracy) on the test set ``(x, y)``."""
    total_loss, correct = 0.0, 0
    for xb, yb in data.eval_batches(x, y, args.eval_batch_size, dtype):
        logits = model(torch.from_numpy(xb))
        yb = torch.from_numpy(yb)
        total_loss += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    return total_loss / len(y), correct / len(y)


def end_segment(state, segment_start):
    """Add the segment's time to the epoch state (its losses are in it already, step by step)."""
    state["time_s"] += time.perf_counter() - segment_start


# ---- the run ------------------------------------------------------------------------------------


def train(args, run, rank, world):
    """Train (or with -resume continue) the run in ``run`` (a ``twinopt.runs.RunDir``) as process
    ``rank`` of ``world``; its folder."""
    dtype = np.float64 if args.dtype == "float64" else np.float32
    # torch.optim keeps scalar state (step counts, NAdam's mu_product) in the default dtype.
    torch.set_default_dtype(torch.float64 if dtype == np.float64 else torch.float32)
    torch.manual_seed(args.seed)
    try:
        ds = data.load_dataset(args.dataset, args.data_dir, args.data_source, args.num_train, args.seed)
    except data.DataError as err:
        raise SystemExit(f"error: {err}") from None
    print(f"data: {ds.source}; {len(ds.y_train)} train / {len(ds.y_test)} test images", flush=True)
    model = build_model(MODELS[args.dataset], args.seed, getattr(torch, args.dtype),
                        hidden=args.mlp_hidden, channels=args.cnn_channels, dense=args.cnn_dense)
    steps_per_epoch = data.steps_per_epoch(len(ds.y_train), args.batch_size)
    if steps_per_epoch == 0:
        raise SystemExit(f"error: -batch_size {args.batch_size} is larger than the {len(ds.y_train)} training images.")
    try:
        opt, scheduler = make_optimizer(args, model, args.num_epochs * steps_per_epoch)
    except ValueError as err:
        raise cli.hyperparameter_error(err, args) from None
    num_params = sum(p.numel() for p in model.parameters())
    print(f"model: {MODELS[args.dataset]}, {num_params:,} params, {args.dtype}; "
          f"optimizer: {cli.describe_optimizer(args)}; schedule: {args.schedule}", flush=True)
    if world > 1:
        print(f"processes: {world} (gloo), {args.batch_size // world} images each a step", flush=True)
    # DistributedDataParallel averages the ranks' gradients of their slices: the gradient of the
    # global batch's mean loss, as in one process.
    net = DistributedDataParallel(model) if world > 1 else model
    rows = host_rows(rank, world, args.batch_size)

    first_epoch, step, partial = 1, 0, None
    if args.resume:
        step, path, (epoch, partial) = run.load_latest(
            lambda path: load_checkpoint(path, run, args.optimizer, model, opt, scheduler))
        first_epoch = epoch if partial is not None else epoch + 1  # None: saved at the end of its epoch
        print(f"resumed from {path} (epoch {epoch}, step {step})", flush=True)
    run.start(data=ds.source, num_train_images=len(ds.y_train), num_test_images=len(ds.y_test))
    run.open_metrics(upto_step=step if args.resume else None, epoch_done=partial is None)
    augment = args.dataset == "cifar" and not args.no_augment
    start_time = time.time()

    with training.StopOnSignal() as stop:
        for epoch in range(first_epoch, args.num_epochs + 1):
            state, partial = partial or training.new_epoch_state(), None
            model.train()
            records = []
            bar = training.progress(steps_per_epoch, f"epoch {epoch}", args.no_progress)
            bar.update(len(state["losses"]))
            segment_start, segment_seen = time.perf_counter(), state["seen"]
            batches = data.train_batches(ds.x_train, ds.y_train, args.batch_size, epoch=epoch, seed=args.seed,
                                         augment=augment, dtype=dtype, start_step=len(state["losses"]))
            for xb, yb in batches:
                x, y = torch.from_numpy(xb[rows]), torch.from_numpy(yb[rows])
                loss, correct = train_step(net, opt, scheduler, x, y)
                step += 1
                state["losses"].append(global_sum(loss, world).item() / world)
                if not math.isfinite(state["losses"][-1]):
                    raise SystemExit(f"error: non-finite training loss {state['losses'][-1]} at step {step}; "
                                     "the last good checkpoint is kept.")
                state["correct"] += global_sum(correct, world).item()
                state["seen"] += len(y) * world
                records.append({"step": step, "epoch": epoch, "loss": state["losses"][-1]})
                bar.update()
                rate = (state["seen"] - segment_seen) / (time.perf_counter() - segment_start)
                bar.set_postfix_str(f"loss {state['losses'][-1]:.4f}, {rate:.0f} samples/s")
                if stop_requested(stop, step, world):
                    end_segment(state, segment_start)
                    run.metrics.write(step, records)
                    run.save_checkpoint(step, checkpoint_bytes(model, opt, scheduler, {
                        "epoch": epoch, "step": step, "epoch_state": state, "config": run.fingerprint()}))
                    bar.close()
                    stop.exit(run.path, "train_torch.py", step)
            end_segment(state, segment_start)
            bar.close()
            model.eval()
            test_loss, test_acc = evaluate(model, ds.x_test, ds.y_test, args, dtype)
            record = training.epoch_record(epoch, step, state, test_loss, test_acc, start_time)
            run.end_epoch(step, records, record, checkpoint_bytes(model, opt, scheduler, {
                "epoch": epoch, "step": step, "epoch_state": None, "config": run.fingerprint()}),
                args.keep_checkpoints)
            training.print_epoch(record, args.num_epochs)
    return run.path


def main(argv=None):
    """Run ``train_torch.py`` with the flags ``argv`` (default: the command line); the exit code."""
    args = cli.parse_args(argv, "torch")
    defaults = vars(cli.parse_args([], "torch"))
    own_group = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    rank, world = init_distributed(args)
    try:
        run = runs.RunDir(args, "torch", "pt", defaults, writer=rank == 0)
        path = train(args, run, rank, world)
    finally:
        if own_group:
            dist.destroy_process_group()
    return 0 if path else 1


if __name__ == "__main__":
    sys.exit(main())
