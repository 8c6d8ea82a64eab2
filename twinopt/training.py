"""Backend-neutral pieces of the training loop: the epoch record and the progress bar."""

from __future__ import annotations

import os
import signal
import sys
import time

from . import runs


def epoch_record(epoch, step, state, test_loss, test_acc, start_time):
    return {
        "epoch": epoch,
        "step": step,
        "train_loss": float(sum(state["losses"]) / len(state["losses"])),
        "train_acc": state["correct"] / state["seen"],
        "test_loss": test_loss,
        "test_acc": test_acc,
        "epoch_time_s": state["time_s"],
        "samples_per_s": state["seen"] / state["time_s"],
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


def new_epoch_state():
    """What an epoch has accumulated so far; saved with a mid-epoch checkpoint so a resumed
    epoch reports the same train loss, accuracy and time as one that never stopped."""
    return {"losses": [], "correct": 0, "seen": 0, "time_s": 0.0}


class StopOnSignal:
    """While active, SIGINT and SIGTERM only set a flag: the loop finishes its step, saves and
    exits. With ``TWINOPT_FAULT=sigint@N`` (or sigterm, sigkill) the run sends itself that
    signal after step N (the tests' fault injection, see runs.py)."""

    def __enter__(self):
        self.signum = None
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        self._faults = bool(os.environ.get(runs.FAULT_ENV))
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def requested(self, step):
        if self._faults:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
                runs.fault(f"{sig.name.lower()}@{step}", sig)
        return self.signum is not None

    def exit(self, run_path, script, step):
        """Say how to resume and leave with the conventional status 128 + signal number."""
        name = signal.Signals(self.signum).name
        print(f"\n{name}: stopped after step {step}, checkpoint saved. Continue with:\n"
              f"  python {script} -out_dir {run_path} -resume", file=sys.stderr, flush=True)
        raise SystemExit(128 + self.signum)
