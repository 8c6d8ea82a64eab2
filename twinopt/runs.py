"""The run folder both training scripts write: ``config.json``, ``metrics.jsonl`` and
``checkpoints/step_NNNNNNNN.<ext>`` (one at the end of every epoch, and one when a signal
stops the run mid-epoch).

Every file is written atomically: a temporary file, flushed and fsynced, then renamed, so a
run killed at any instant (SIGKILL included) leaves the previous version intact. The metrics
of a step are durable before the checkpoint that follows it, and old checkpoints are removed
only once a newer one is complete; ``-resume`` drops the records after the checkpoint it
resumes from, so they are not counted twice. A new run refuses a non-empty folder, and is
created only after its data, model and optimizer have been checked; ``-resume`` takes the
configuration from the folder's ``config.json``.

Both checkpoint formats (torch's and NumPy's ``.npz``) are zip files with a CRC-32 for every
entry: ``-resume`` verifies it before loading, reports a damaged checkpoint by name, renames
it ``*.damaged`` and falls back to the newest valid one. A checkpoint that is intact but
unusable (pickled code, another optimizer or model) is an error instead. Either script
continues a run of the other: ``-resume`` takes the newest checkpoint of either format and
converts it (``twinopt.convert``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import zipfile

import numpy as np

from twinopt import convert, torch_pickle

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
CHECKPOINT_EXTS = ("pt", "npz")  # train_torch.py's, train_jax.py's

# The settings that define a trajectory: on -resume they come from the run's config.json, and a
# checkpoint records them so that one from another run is recognised.
TRAJECTORY_KEYS = (
    "dataset", "num_train", "batch_size", "optimizer", "optimizer_kwargs", "lookahead", "lookahead_k",
    "lookahead_alpha", "schedule", "dtype", "seed", "no_augment", "mlp_hidden", "cnn_channels", "cnn_dense",
)

# Fault injection for the tests: TWINOPT_FAULT=<point>[,<point>...] makes the process kill itself there.
# Points: "sigint@N", "sigterm@N", "sigkill@N" (after step N), and "<when>:<file>@N" with
# <when> one of mid-write (half the bytes on disk), before-rename, after-rename and <file>
# "checkpoint" or "metrics" (the write of step N).
FAULT_ENV = "TWINOPT_FAULT"


def faults():
    return os.environ.get(FAULT_ENV, "").split(",")


def fault(point, sig=signal.SIGKILL):
    if point in faults():
        os.kill(os.getpid(), sig)


class CheckpointError(Exception):
    """A checkpoint that cannot be used: the message names the file, the reason and the fix."""


class DamagedCheckpoint(CheckpointError):
    """Truncated or with changed bytes: ``-resume`` falls back to an older checkpoint."""


def atomic_write(path, data: bytes, tag=None):
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        if tag is not None and f"mid-write:{tag}" in faults():
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
            fault(f"mid-write:{tag}")
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if tag is not None:
        fault(f"before-rename:{tag}")
    os.replace(tmp, path)
    if tag is not None:
        fault(f"after-rename:{tag}")


def verify_zip(path):
    """Raise DamagedCheckpoint unless ``path`` is a complete zip whose entries match their CRC-32."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise DamagedCheckpoint(f"{path} is truncated or corrupt ({err})") from None
    if bad is not None:
        raise DamagedCheckpoint(f"{path} is corrupt: its entry {bad} fails its CRC-32 check")


def read_npz(path):
    """``(meta, arrays)`` of a train_jax.py checkpoint: its JSON meta and its named arrays
    (``np.load`` with ``allow_pickle=False``: nothing is unpickled)."""
    try:
        with np.load(path) as ckpt:
            meta = json.loads(str(ckpt["meta"]))
            arrays = {name: ckpt[name] for name in ckpt.files if name != "meta"}
    except ValueError as err:  # object arrays would need unpickling
        raise CheckpointError(f"{path} holds pickled objects, which are never loaded ({err})") from None
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is not a checkpoint of train_jax.py ({err!r})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} is not a checkpoint of train_jax.py (its meta is {type(meta).__name__})")
    return meta, arrays


def npz_part(arrays, part):
    """The ``params`` or ``opt_state`` entries of a train_jax.py checkpoint, without the prefix."""
    return {name.removeprefix(f"{part}/"): v for name, v in arrays.items() if name.startswith(f"{part}/")}


def jsonable(value):
    """``value`` as JSON gives it back: tuples as lists, at any depth."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return [jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


class RunDir:
    """A run folder. ``resume=False``: refuses a non-empty folder now and creates it in
    :meth:`start`; ``resume=True``: loads its config into ``args`` (the trajectory settings).

    ``writer=False`` (the other processes of a distributed run) reads the folder but writes
    nothing: one process writes, and only it decides whether a new run's folder is free."""

    def __init__(self, args, backend, ext, defaults, writer=True):
        self.path, self.backend, self.ext, self.resume = args.out_dir, backend, ext, args.resume
        self.writer = writer
        self.ckpt_dir = os.path.join(self.path, CHECKPOINTS)
        if args.resume:
            self._load_config(args, defaults)
        else:
            if writer:
                self._refuse_non_empty()
            self.config = {k: jsonable(v) for k, v in vars(args).items()}
            self.config["backend"] = backend

    def _refuse_non_empty(self):
        if os.path.isdir(self.path) and os.listdir(self.path):
            raise SystemExit(
                f"error: the run folder {self.path} is not empty; continue it with -resume, or choose "
                "another -out_dir (nothing was changed)."
            )
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise SystemExit(f"error: -out_dir {self.path} is a file; choose another -out_dir (nothing was changed).")

    def start(self, **facts):
        """Called once the data, model and optimizer are checked: create the folder (a new run)
        and add facts found while starting (the data source, the sizes) to config.json; a resumed
        run keeps what its start recorded and adds ``resumed_<field>`` entries."""
        if self.resume:  # the backend that continues the run: either script continues either's run
            facts = {"backend": self.backend, **facts}
        for key, value in facts.items():
            self.config[f"resumed_{key}" if self.resume and key in self.config else key] = value
        if not self.writer:
            return
        if self.resume:
            self._remove_unfinished_writes()
        else:
            self._refuse_non_empty()  # again: another process may have started a run there meanwhile
            os.makedirs(self.ckpt_dir, exist_ok=True)
        atomic_write(os.path.join(self.path, CONFIG), (json.dumps(self.config, indent=1) + "\n").encode())

    def _remove_unfinished_writes(self):
        """A ``*.tmp`` file is a write that a kill interrupted before its rename: the file it
        was meant to replace is intact, so the temporary one goes."""
        for folder in (self.path, self.ckpt_dir):
            for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
                if name.endswith(".tmp"):
                    os.remove(os.path.join(folder, name))
                    print(f"removed {os.path.join(folder, name)}, a write the previous run did not finish",
                          file=sys.stderr, flush=True)

    def _load_config(self, args, defaults):
        """Flags left at their defaults take the run's values; a flag given with another value
        than the run's is an error if it changes the trajectory, else it wins (-num_epochs
        extends a run, -data_dir points to moved data)."""
        path = os.path.join(self.path, CONFIG)
        if not os.path.isfile(path):
            raise SystemExit(f"error: -resume: no {CONFIG} in {self.path}; start the run without -resume.")
        try:
            with open(path) as f:
                self.config = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise SystemExit(f"error: -resume: {path} is not valid JSON ({err}); restore it from a backup, "
                             "or start a new run in another -out_dir.") from None
        for key, default in defaults.items():
            if key in ("resume", "out_dir") or key not in self.config:
                continue
            given, stored = jsonable(getattr(args, key)), self.config[key]
            if key in TRAJECTORY_KEYS and given != stored and given != jsonable(default):
                raise SystemExit(
                    f"error: -resume: -{key} {given} differs from the run's {stored} ({path}); a resumed run "
                    "keeps its configuration: drop the flag, or start a new run in another -out_dir."
                )
            if given == jsonable(default) or key in TRAJECTORY_KEYS:
                setattr(args, key, tuple(stored) if isinstance(stored, list) else stored)
        if isinstance(args.optimizer_kwargs.get("betas"), list):
            args.optimizer_kwargs["betas"] = tuple(args.optimizer_kwargs["betas"])
        if args.schedule != "constant" and args.num_epochs != self.config["num_epochs"]:
            raise SystemExit(
                f"error: -resume: -num_epochs {args.num_epochs} differs from the run's {self.config['num_epochs']}, "
                f"which fixes its {args.schedule} schedule; drop the flag, or start a new run in another -out_dir."
            )

    def fingerprint(self):
        """The trajectory settings, stored in every checkpoint."""
        return {key: self.config[key] for key in TRAJECTORY_KEYS}

    def check_fingerprint(self, path, stored):
        """Raise CheckpointError if the checkpoint at ``path`` was written by another kind of run."""
        if not isinstance(stored, dict):
            raise CheckpointError(f"{path} does not record the run that wrote it: it is not a checkpoint of "
                                  f"train_{self.backend}.py")
        for key, value in self.fingerprint().items():
            if jsonable(stored.get(key)) != jsonable(value):
                raise CheckpointError(
                    f"{path} was written by a run with -{key} {stored.get(key)}, but this run has {value}: it "
                    "belongs to another run. Move it out of the folder to resume from the checkpoint before it."
                )

    def checkpoint_path(self, step):
        return os.path.join(self.ckpt_dir, f"step_{step:08d}.{self.ext}")

    def checkpoints(self):
        """(step, path) of every checkpoint, of either backend, oldest first (at the same step,
        this backend's last)."""
        if not os.path.isdir(self.ckpt_dir):
            return []
        found = []
        for name in os.listdir(self.ckpt_dir):
            match = re.fullmatch(rf"step_(\d+)\.({'|'.join(CHECKPOINT_EXTS)})", name)
            if match:
                found.append((int(match.group(1)), match.group(2) == self.ext, os.path.join(self.ckpt_dir, name)))
        return [(step, path) for step, _, path in sorted(found)]

    def save_checkpoint(self, step, data: bytes):
        if self.writer:
            atomic_write(self.checkpoint_path(step), data, tag=f"checkpoint@{step}")

    def load_latest(self, load):
        """``(step, path, load(path))`` for the newest checkpoint that is intact; a damaged one is
        reported, renamed ``*.damaged`` (kept, never deleted) and the one before it is tried."""
        found = self.checkpoints()
        if not found:
            raise SystemExit(f"error: -resume: no checkpoint (step_*.pt, step_*.npz) in {self.ckpt_dir}; "
                             "start the run without -resume.")
        damaged = []
        for step, path in reversed(found):
            try:
                verify_zip(path)
                return step, path, load(path)
            except DamagedCheckpoint as err:
                kept = _free_name(f"{path}.damaged") if self.writer else path
                if self.writer:
                    os.replace(path, kept)
                damaged.append(str(err))
                print(f"warning: {err}; kept as {kept}, trying the checkpoint before it.", file=sys.stderr, flush=True)
            except CheckpointError as err:
                raise SystemExit(f"error: -resume: {err}") from None
        raise SystemExit(f"error: -resume: no intact checkpoint in {self.ckpt_dir} ({'; '.join(damaged)}); "
                         "start the run again in a new -out_dir.")

    def prune(self, keep):
        if keep > 0 and self.writer:
            for _, path in self.checkpoints()[:-keep]:
                os.remove(path)

    def open_metrics(self, upto_step=None, epoch_done=True):
        """On resume first drop the records written after the checkpoint's step (per-step records
        carry their step, per-epoch ones the epoch's last step; the epoch record at the step itself
        goes too if the checkpoint was saved before its epoch ended), as those steps run again."""
        path = os.path.join(self.path, METRICS)
        self.metrics = MetricsLog(path, self.writer)
        if upto_step is not None:
            kept = [r for r in self.metrics.read()
                    if r["step"] < upto_step or (r["step"] == upto_step and ("loss" in r or epoch_done))]
            self.metrics.rewrite(kept)
        return self.metrics

    def end_epoch(self, step, records, epoch_record, checkpoint: bytes, keep_checkpoints):
        """The epoch's metrics, then its checkpoint, then the old checkpoints go."""
        self.metrics.write(step, [*records, epoch_record])
        self.save_checkpoint(step, checkpoint)
        self.prune(keep_checkpoints)


def _free_name(path):
    candidate, n = path, 1
    while os.path.exists(candidate):
        candidate, n = f"{path}.{n}", n + 1
    return candidate


class MetricsLog:
    """metrics.jsonl, rewritten atomically with the new records appended (once an epoch)."""

    def __init__(self, path, writer=True):
        self.path, self.writer = path, writer

    def read(self):
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            lines = f.read().splitlines()
        records = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise SystemExit(f"error: {self.path} line {number} is not JSON ({err}); restore the file "
                                 "from a backup, or delete that line.") from None
        return records

    def rewrite(self, records):
        if self.writer:
            atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in records).encode())

    def write(self, step, records):
        if not self.writer:
            return
        old = b""
        if os.path.exists(self.path):
            with open(self.path, "rb") as f:
                old = f.read()
        new = "".join(json.dumps(r) + "\n" for r in records).encode()
        atomic_write(self.path, old + new, tag=f"metrics@{step}")


def read_weights(path):
    """The model weights of a checkpoint of either script, as a torch ``state_dict`` of NumPy
    arrays; needs neither torch nor JAX (a .pt file is read by ``twinopt.torch_pickle``)."""
    if path.endswith(".pt"):
        return torch_pickle.load(path)["model"]
    _, arrays = read_npz(path)
    return convert.weights_to_torch(npz_part(arrays, "params"))
