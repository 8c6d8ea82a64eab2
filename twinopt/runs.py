"""The run folder both training scripts write: ``config.json``, ``metrics.jsonl`` and
``checkpoints/step_NNNNNNNN.<ext>`` (one at the end of every epoch, and one when a signal
stops the run mid-epoch).

Files are written atomically (a temporary file, flushed and fsynced, then renamed), so a run
killed while writing leaves the previous version intact. A new run refuses a non-empty
folder; ``-resume`` takes the configuration from the folder's ``config.json``.
"""

from __future__ import annotations

import json
import os
import re

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"

# The settings that define a trajectory: on -resume they come from the run's config.json.
TRAJECTORY_KEYS = (
    "dataset", "num_train", "batch_size", "optimizer", "optimizer_kwargs", "lookahead", "lookahead_k",
    "lookahead_alpha", "schedule", "dtype", "seed", "no_augment", "mlp_hidden", "cnn_channels", "cnn_dense",
)


def commit(tmp, path):
    """Make the finished file ``tmp`` durable, then rename it to ``path`` in one step."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write(path, data: bytes):
    with open(f"{path}.tmp", "wb") as f:
        f.write(data)
    commit(f"{path}.tmp", path)


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


class RunDir:
    """A run folder; ``resume=False`` creates it (refusing a non-empty one), ``resume=True``
    loads its config into ``args`` (the trajectory settings) and finds the newest checkpoint."""

    def __init__(self, args, backend, ext, defaults):
        self.path, self.backend, self.ext = args.out_dir, backend, ext
        self.ckpt_dir = os.path.join(self.path, CHECKPOINTS)
        if args.resume:
            self._load_config(args, defaults)
        else:
            if os.path.isdir(self.path) and os.listdir(self.path):
                raise SystemExit(
                    f"error: the run folder {self.path} is not empty; continue it with -resume, or choose "
                    "another -out_dir (nothing was changed)."
                )
            os.makedirs(self.ckpt_dir, exist_ok=True)
            self.config = {k: _jsonable(v) for k, v in vars(args).items()}
            self.config["backend"] = backend
            self._write_config()

    def _write_config(self):
        atomic_write(os.path.join(self.path, CONFIG), (json.dumps(self.config, indent=1) + "\n").encode())

    def record(self, **fields):
        """Add facts found while starting (the data source, the parameter count) to config.json;
        a resumed run keeps what its start recorded and adds ``resumed_<field>`` entries."""
        for key, value in fields.items():
            self.config[f"resumed_{key}" if key in self.config else key] = value
        self._write_config()

    def _load_config(self, args, defaults):
        """Flags left at their defaults take the run's values; a flag given with another value
        than the run's is an error if it changes the trajectory, else it wins (-num_epochs
        extends a run, -data_dir points to moved data)."""
        path = os.path.join(self.path, CONFIG)
        if not os.path.isfile(path):
            raise SystemExit(f"error: -resume: no {CONFIG} in {self.path}; start the run without -resume.")
        with open(path) as f:
            self.config = json.load(f)
        for key, default in defaults.items():
            if key in ("resume", "out_dir") or key not in self.config:
                continue
            given, stored = _jsonable(getattr(args, key)), self.config[key]
            if key in TRAJECTORY_KEYS and given != stored and given != _jsonable(default):
                raise SystemExit(
                    f"error: -resume: -{key} {given} differs from the run's {stored} ({path}); a resumed run "
                    "keeps its configuration: drop the flag, or start a new run in another -out_dir."
                )
            if given == _jsonable(default) or key in TRAJECTORY_KEYS:
                setattr(args, key, tuple(stored) if isinstance(stored, list) else stored)
        if isinstance(args.optimizer_kwargs.get("betas"), list):
            args.optimizer_kwargs["betas"] = tuple(args.optimizer_kwargs["betas"])
        if args.schedule != "constant" and args.num_epochs != self.config["num_epochs"]:
            raise SystemExit(
                f"error: -resume: -num_epochs {args.num_epochs} differs from the run's {self.config['num_epochs']}, "
                f"which fixes its {args.schedule} schedule; drop the flag, or start a new run in another -out_dir."
            )

    def checkpoint_path(self, step):
        return os.path.join(self.ckpt_dir, f"step_{step:08d}.{self.ext}")

    def checkpoints(self):
        """(step, path) of every checkpoint of this backend, oldest first."""
        if not os.path.isdir(self.ckpt_dir):
            return []
        found = []
        for name in os.listdir(self.ckpt_dir):
            match = re.fullmatch(rf"step_(\d+)\.{self.ext}", name)
            if match:
                found.append((int(match.group(1)), os.path.join(self.ckpt_dir, name)))
        return sorted(found)

    def latest_checkpoint(self):
        found = self.checkpoints()
        if not found:
            raise SystemExit(
                f"error: -resume: no {self.backend} checkpoint (*.{self.ext}) in {self.ckpt_dir}; "
                "start the run without -resume."
            )
        return found[-1]

    def prune(self, keep):
        if keep > 0:
            for _, path in self.checkpoints()[:-keep]:
                os.remove(path)

    def open_metrics(self, upto_step=None):
        """Append to metrics.jsonl; on resume first drop the records after the checkpoint's step
        (every record has a ``step``: per-step records their step, per-epoch ones the last step
        of the epoch), as those steps are run again."""
        path = os.path.join(self.path, METRICS)
        if upto_step is not None and os.path.exists(path):
            with open(path) as f:
                records = [json.loads(line) for line in f if line.strip()]
            kept = [r for r in records if r["step"] <= upto_step]
            atomic_write(path, "".join(json.dumps(r) + "\n" for r in kept).encode())
        self.metrics = MetricsLog(path)
        return self.metrics

    def end_epoch(self, records, epoch_record, keep_checkpoints):
        """After the epoch's checkpoint is written: its metrics, then the old checkpoints go."""
        self.metrics.write([*records, epoch_record])
        self.prune(keep_checkpoints)


class MetricsLog:
    def __init__(self, path):
        self.file = open(path, "a")

    def write(self, records):
        for record in records:
            self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self):
        self.file.close()
