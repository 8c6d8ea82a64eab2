"""Train the DeepOBS MNIST MLP or CIFAR-10 3c3d CNN with a torch_opt optimizer.

    python train_torch.py -dataset mnist -optimizer adam -num_epochs 3
    python train_torch.py -num_epochs 100 -dataset cifar -num_train 16384 -data_dir ../shared/data

Takes the same flags as train_jax.py; with the same seed both start from the same weights,
see the same batches in the same order and follow the same trajectory (parity_tests).
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import torch_opt
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


@torch.no_grad()
def evaluate(model, x, y, args, dtype):
    total_loss, correct = 0.0, 0
    for xb, yb in data.eval_batches(x, y, args.eval_batch_size, dtype):
        logits = model(torch.from_numpy(xb))
        yb = torch.from_numpy(yb)
        total_loss += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    return total_loss / len(y), correct / len(y)


def main(argv=None):
    args = cli.parse_args(argv, "torch")
    defaults = vars(cli.parse_args([], "torch"))
    run = runs.RunDir(args, "torch", "pt", defaults)
    dtype = np.float64 if args.dtype == "float64" else np.float32
    # torch.optim keeps scalar state (step counts, NAdam's mu_product) in the default dtype.
    torch.set_default_dtype(torch.float64 if dtype == np.float64 else torch.float32)
    torch.manual_seed(args.seed)

    ds = data.load_dataset(args.dataset, args.data_dir, args.data_source, args.num_train, args.seed)
    print(f"data: {ds.source}; {len(ds.y_train)} train / {len(ds.y_test)} test images", flush=True)
    run.record(data=ds.source, num_train_images=len(ds.y_train), num_test_images=len(ds.y_test))
    model = build_model(MODELS[args.dataset], args.seed, getattr(torch, args.dtype),
                        hidden=args.mlp_hidden, channels=args.cnn_channels, dense=args.cnn_dense)
    steps_per_epoch = data.steps_per_epoch(len(ds.y_train), args.batch_size)
    if steps_per_epoch == 0:
        raise SystemExit(f"error: -batch_size {args.batch_size} is larger than the {len(ds.y_train)} training images.")
    opt, scheduler = make_optimizer(args, model, args.num_epochs * steps_per_epoch)
    print(f"model: {MODELS[args.dataset]}, {sum(p.numel() for p in model.parameters()):,} params, {args.dtype}; "
          f"optimizer: {cli.describe_optimizer(args)}; schedule: {args.schedule}", flush=True)

    start_epoch, step = 0, 0
    if args.resume:
        epoch, path = run.latest_checkpoint()
        ckpt = torch.load(path, weights_only=True)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, step = epoch, ckpt["step"]
        print(f"resumed from {path} (epoch {epoch}, step {step})", flush=True)
    run.open_metrics(upto_step=step if args.resume else None)
    augment = args.dataset == "cifar" and not args.no_augment
    start_time = time.time()

    for epoch in range(start_epoch + 1, args.num_epochs + 1):
        model.train()
        losses, correct, seen, records = [], 0, 0, []
        bar = training.progress(steps_per_epoch, f"epoch {epoch}", args.no_progress)
        epoch_start = time.perf_counter()
        for xb, yb in data.train_batches(ds.x_train, ds.y_train, args.batch_size, epoch=epoch, seed=args.seed,
                                         augment=augment, dtype=dtype):
            x, y = torch.from_numpy(xb), torch.from_numpy(yb)
            opt.zero_grad(set_to_none=True)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            opt.step()
            if scheduler is not None:
                scheduler.step()
            step += 1
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                raise SystemExit(f"error: non-finite training loss {losses[-1]} at step {step}; "
                                 "the last good checkpoint is kept.")
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            records.append({"step": step, "epoch": epoch, "loss": losses[-1]})
            bar.update()
            bar.set_postfix_str(f"loss {losses[-1]:.4f}, {seen / (time.perf_counter() - epoch_start):.0f} samples/s")
        epoch_time = time.perf_counter() - epoch_start
        bar.close()
        model.eval()
        test_loss, test_acc = evaluate(model, ds.x_test, ds.y_test, args, dtype)
        record = training.epoch_record(epoch, step, losses, correct, seen, test_loss, test_acc, epoch_time, start_time)
        ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None, "epoch": epoch, "step": step}
        torch.save(ckpt, run.checkpoint_path(epoch) + ".tmp")
        runs.commit(run.checkpoint_path(epoch) + ".tmp", run.checkpoint_path(epoch))
        run.end_epoch(records, record, args.keep_checkpoints)
        training.print_epoch(record, args.num_epochs)
    run.metrics.close()
    return run.path


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
