"""Backend-neutral pieces of the training loop: the epoch record and the progress bar."""

from __future__ import annotations

import sys
import time


def epoch_record(epoch, step, losses, correct, seen, test_loss, test_acc, epoch_time, start_time):
    return {
        "epoch": epoch,
        "step": step,
        "train_loss": float(sum(losses) / len(losses)),
        "train_acc": correct / seen,
        "test_loss": test_loss,
        "test_acc": test_acc,
        "epoch_time_s": epoch_time,
        "samples_per_s": seen / epoch_time,
        "wall_time_s": time.time() - start_time,
    }


def print_epoch(record, num_epochs):
    print(
        f"epoch {record['epoch']}/{num_epochs}: train loss {record['train_loss']:.4f} acc {record['train_acc']:.4f} | "
        f"test loss {record['test_loss']:.4f} acc {record['test_acc']:.4f} | {record['epoch_time_s']:.1f} s, "
        f"{record['samples_per_s']:.0f} samples/s",
        flush=True,
    )


def progress(total, desc, disable):
    """A tqdm bar on stderr (none when disabled or tqdm is missing)."""
    try:
        from tqdm import tqdm
    except ImportError:
        disable = True
    if disable:
        return _NoBar()
    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, unit="step", dynamic_ncols=True)


class _NoBar:
    def update(self, n=1):
        pass

    def set_postfix_str(self, text):
        pass

    def close(self):
        pass
