"""Train the DeepOBS MNIST MLP or CIFAR-10 3c3d CNN with a torch_opt optimizer.

    python train_torch.py -dataset mnist -optimizer adam -num_epochs 3
    python train_torch.py -num_epochs 100 -dataset cifar -num_train 16384 -data_dir ../shared/data

Takes the same flags as train_jax.py; with the same seed both start from the same weights,
see the same batches in the same order and follow the same trajectory (parity_tests).
"""

from __future__ import annotations

import io
import math
import os
import pickle
import re
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

import torch_opt
from torch_train.convert import advance_scheduler, to_tensors
from torch_train.models import build_model
from twinopt import cli, convert, data, runs, training
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


@torch.no_grad()
def evaluate(model, x, y, args, dtype):
    total_loss, correct = 0.0, 0
    for xb, yb in data.eval_batches(x, y, args.eval_batch_size, dtype):
        logits = model(torch.from_numpy(xb))
        yb = torch.from_numpy(yb)
        total_loss += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    return total_loss / len(y), correct / len(y)


def read_jax_checkpoint(path, run, key, model, opt):
    """A train_jax.py checkpoint converted to this script's form (``twinopt.convert``; no JAX needed)."""
    meta, arrays = runs.read_npz(path)
    run.check_fingerprint(path, meta.get("config"))
    if "num_leaves" in meta:
        raise runs.CheckpointError(f"{path} was written by a train_jax.py that did not name its arrays; continue "
                                   "the run with train_jax.py")
    flat_params, flat_state = runs.npz_part(arrays, "params"), runs.npz_part(arrays, "opt_state")
    layout = convert.Layout({name: tuple(p.shape) for name, p in model.state_dict().items()})
    try:
        optimizer = convert.optimizer_state_to_torch(flat_state, opt.state_dict(), key, layout)
        return {**meta, "model": to_tensors(convert.weights_to_torch(flat_params)), "optimizer": to_tensors(optimizer)}
    except convert.ConversionError as err:
        raise runs.CheckpointError(f"{path} does not fit this run's model and optimizer ({err})") from None


def load_checkpoint(path, run, key, model, opt, scheduler):
    """Restore a checkpoint of either script (a torch one with weights_only: a pickle never runs
    code); raise runs.CheckpointError if the file is not a checkpoint of this run."""
    if path.endswith(".npz"):
        ckpt = read_jax_checkpoint(path, run, key, model, opt)
    else:
        try:
            ckpt = torch.load(path, weights_only=True)
        except pickle.UnpicklingError as err:
            code = re.search(r"GLOBAL (\S+)", str(err))
            raise runs.CheckpointError(
                f"{path} holds pickled code ({code.group(1) if code else err}), which is never run: "
                "torch.load(weights_only=True) refused it. Only use checkpoints train_torch.py wrote; move the file "
                "out of the folder to resume from the checkpoint before it.") from None
        except RuntimeError as err:
            raise runs.CheckpointError(f"{path} is not a torch checkpoint ({str(err).splitlines()[0]})") from None
        run.check_fingerprint(path, ckpt.get("config") if isinstance(ckpt, dict) else None)
    try:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        if scheduler is not None and path.endswith(".npz"):  # JAX keeps the schedule's position in its counts
            advance_scheduler(scheduler, ckpt["step"])
        elif scheduler is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        return ckpt["epoch"], ckpt["epoch_state"]
    except (KeyError, ValueError, RuntimeError) as err:
        raise runs.CheckpointError(f"{path} does not fit this run's model and optimizer ({err})") from None


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


def global_sum(value, world):
    """The sum over the processes (a tensor); the value itself in a single process."""
    if world > 1:
        value = value.detach().clone()
        dist.all_reduce(value)
    return value


def main(argv=None):
    args = cli.parse_args(argv, "torch")
    defaults = vars(cli.parse_args([], "torch"))
    own_group = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    rank, world = init_distributed(args)
    try:
        return train(args, defaults, rank, world)
    finally:
        if own_group:
            dist.destroy_process_group()


def train(args, defaults, rank, world):
    run = runs.RunDir(args, "torch", "pt", defaults, writer=rank == 0)
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
    print(f"model: {MODELS[args.dataset]}, {sum(p.numel() for p in model.parameters()):,} params, {args.dtype}; "
          f"optimizer: {cli.describe_optimizer(args)}; schedule: {args.schedule}", flush=True)
    # DistributedDataParallel averages the ranks' gradients of their slices: the gradient of the
    # global batch's mean loss, as in one process.
    net = DistributedDataParallel(model) if world > 1 else model
    rows = slice(rank * args.batch_size // world, (rank + 1) * args.batch_size // world)
    if world > 1:
        print(f"processes: {world} (gloo), {args.batch_size // world} images each a step", flush=True)

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

    def checkpoint(epoch, epoch_state):
        buffer = io.BytesIO()
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "step": step,
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "epoch_state": epoch_state, "config": run.fingerprint()}, buffer)
        return buffer.getvalue()

    with training.StopOnSignal() as stop:
        for epoch in range(first_epoch, args.num_epochs + 1):
            state, partial = partial or training.new_epoch_state(), None
            model.train()
            records = []
            bar = training.progress(steps_per_epoch, f"epoch {epoch}", args.no_progress)
            bar.update(len(state["losses"]))
            segment_start, segment_seen = time.perf_counter(), state["seen"]
            for xb, yb in data.train_batches(ds.x_train, ds.y_train, args.batch_size, epoch=epoch, seed=args.seed,
                                             augment=augment, dtype=dtype, start_step=len(state["losses"])):
                x, y = torch.from_numpy(xb[rows]), torch.from_numpy(yb[rows])
                opt.zero_grad(set_to_none=True)
                logits = net(x)
                loss = F.cross_entropy(logits, y)
                loss.backward()
                opt.step()
                if scheduler is not None:
                    scheduler.step()
                step += 1
                state["losses"].append(global_sum(loss, world).item() / world)
                if not math.isfinite(state["losses"][-1]):
                    raise SystemExit(f"error: non-finite training loss {state['losses'][-1]} at step {step}; "
                                     "the last good checkpoint is kept.")
                state["correct"] += global_sum((logits.argmax(1) == y).sum(), world).item()
                state["seen"] += len(y) * world
                records.append({"step": step, "epoch": epoch, "loss": state["losses"][-1]})
                bar.update()
                rate = (state["seen"] - segment_seen) / (time.perf_counter() - segment_start)
                bar.set_postfix_str(f"loss {state['losses'][-1]:.4f}, {rate:.0f} samples/s")
                if global_sum(torch.tensor(stop.requested(step), dtype=torch.int32), world):  # all stop together
                    state["time_s"] += time.perf_counter() - segment_start
                    run.metrics.write(step, records)
                    run.save_checkpoint(step, checkpoint(epoch, state))
                    bar.close()
                    stop.exit(run.path, "train_torch.py", step)
            state["time_s"] += time.perf_counter() - segment_start
            bar.close()
            model.eval()
            test_loss, test_acc = evaluate(model, ds.x_test, ds.y_test, args, dtype)
            record = training.epoch_record(epoch, step, state, test_loss, test_acc, start_time)
            run.end_epoch(step, records, record, checkpoint(epoch, None), args.keep_checkpoints)
            training.print_epoch(record, args.num_epochs)
    return run.path


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
