"""Faults injected into real runs of both scripts: SIGKILL at every point of a write, damaged,
poisoned and foreign checkpoints. Every interrupted run resumes to the per-step records and the
bit-identical final checkpoint of the run that never stopped."""

import io
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
from script_helpers import EXT, SCRIPTS, argv, assert_same_run, records

from twinopt import runs
from twinopt.registry import KEYS

REPO = Path(__file__).resolve().parents[1]
# 3 epochs of 4 steps: checkpoints after steps 4, 8 and 12.
FLAGS = ("-optimizer", "adam", "-lookahead", "-lookahead_k", "3", "-schedule", "cosine", "-num_epochs", "3")

# Where the process is killed (runs.FAULT_ENV); "sigint@6," first stops the run mid-epoch, so
# that the checkpoint written on SIGINT is the one the kill interrupts.
KILLS = [
    "sigkill@6",  # mid-epoch, between writes
    "mid-write:metrics@8", "before-rename:metrics@8", "after-rename:metrics@8",
    "mid-write:checkpoint@8", "before-rename:checkpoint@8", "after-rename:checkpoint@8",
    "sigint@6,mid-write:metrics@6", "sigint@6,mid-write:checkpoint@6", "sigint@6,before-rename:checkpoint@6",
    "mid-write:checkpoint@12",  # the run's last write
]


@pytest.fixture(scope="module")
def straight(data_dir, tmp_path_factory):
    """The uninterrupted reference run of each backend, made once."""
    made = {}

    def get(backend):
        if backend not in made:
            made[backend] = tmp_path_factory.mktemp("straight") / backend
            SCRIPTS[backend].main(argv(data_dir, made[backend], *FLAGS))
        return made[backend]
    return get


def resume(backend, run, data_dir):
    SCRIPTS[backend].main(["-out_dir", str(run), "-resume", "-no_progress", "-data_dir", str(data_dir)])


def newest(run, backend, nth=1):
    return sorted((Path(run) / "checkpoints").glob(f"*.{EXT[backend]}"))[-nth]


@pytest.mark.parametrize("point", KILLS)
@pytest.mark.parametrize("backend", SCRIPTS)
def test_sigkill_then_resume_is_exact(backend, point, straight, data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    # The subprocess loads the XLA programs this session compiled (conftest.py) instead of compiling.
    env = {**os.environ, runs.FAULT_ENV: point, "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir,
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    proc = subprocess.run([sys.executable, f"train_{backend}.py", *argv(data_dir, run, *FLAGS)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-3000:]
    unfinished = sorted(run.rglob("*.tmp"))
    assert len(unfinished) == ("mid-write" in point or "before-rename" in point), unfinished
    resume(backend, run, data_dir)
    err = capsys.readouterr().err
    assert all(f"removed {path}, a write the previous run did not finish" in err for path in unfinished)
    assert not list(run.rglob("*.tmp"))
    assert_same_run(run, straight(backend), backend)


def flip_one_data_bit(data: bytes) -> bytes:
    """One bit changed in the middle of the largest array's bytes (as bit rot would)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        entry = max(archive.infolist(), key=lambda info: info.file_size)
    name_len, extra_len = struct.unpack("<HH", data[entry.header_offset + 26: entry.header_offset + 30])
    at = entry.header_offset + 30 + name_len + extra_len + entry.file_size // 2
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


DAMAGES = {
    "truncated": lambda b: b[: len(b) // 2],
    "empty": lambda b: b"",
    "one-bit-changed": flip_one_data_bit,
    "not-a-zip": lambda b: b"not a checkpoint\n",
}


def damage(path, how):
    path.write_bytes(DAMAGES[how](path.read_bytes()))


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("backend", SCRIPTS)
def test_damaged_checkpoint_falls_back_to_the_one_before(backend, how, straight, data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(straight(backend), run)
    path = newest(run, backend)
    damage(path, how)
    resume(backend, run, data_dir)
    err = capsys.readouterr().err
    assert f"warning: {path} is " in err and f"kept as {path}.damaged" in err
    assert (Path(f"{path}.damaged")).exists()
    assert_same_run(run, straight(backend), backend)


@pytest.mark.parametrize("backend", SCRIPTS)
def test_two_damaged_checkpoints_fall_back_twice_and_all_damaged_is_an_error(backend, straight, data_dir, tmp_path,
                                                                              capsys):
    run = tmp_path / "run"
    shutil.copytree(straight(backend), run)
    damage(newest(run, backend, 1), "truncated")
    damage(newest(run, backend, 2), "one-bit-changed")
    resume(backend, run, data_dir)
    assert "resumed from" in capsys.readouterr().out
    assert_same_run(run, straight(backend), backend)
    for path in (run / "checkpoints").glob(f"*.{EXT[backend]}"):
        damage(path, "truncated")
    with pytest.raises(SystemExit, match="no intact checkpoint in .*start the run again in a new -out_dir"):
        resume(backend, run, data_dir)


class Payload:
    """Unpickling this would create the marker file: it must never happen."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.parametrize("backend", SCRIPTS)
def test_checkpoint_with_pickled_code_is_refused_never_run(backend, straight, data_dir, tmp_path):
    run, marker = tmp_path / "run", tmp_path / "pwned"
    shutil.copytree(straight(backend), run)
    path = newest(run, backend)
    if backend == "torch":
        torch.save({"model": Payload(marker), "config": {}}, path)
        message = r"holds pickled code \(io.open\), which is never run"
    else:
        np.savez(path, arr_0=np.array([Payload(marker)], dtype=object), meta=np.array('{"num_leaves": 1}'))
        message = "holds pickled objects, which are never loaded"
    before = records(run)
    with pytest.raises(SystemExit, match=message):
        resume(backend, run, data_dir)
    assert not marker.exists() and records(run) == before


@pytest.mark.parametrize("other", [("-optimizer", "adamw"), ("-mlp_hidden", "16,4"), ("-seed", "1")])
@pytest.mark.parametrize("backend", SCRIPTS)
def test_checkpoint_of_another_run_is_an_error(backend, other, straight, data_dir, tmp_path):
    """A checkpoint copied in from another run is named, with the setting that differs."""
    run, foreign = tmp_path / "run", tmp_path / "foreign"
    shutil.copytree(straight(backend), run)
    flags = list(FLAGS)
    for name, value in (other, ("-num_epochs", "1")):
        if name in flags:
            flags[flags.index(name) + 1] = value
        else:
            flags += [name, value]
    SCRIPTS[backend].main(argv(data_dir, foreign, *flags))
    shutil.copy(newest(foreign, backend), run / "checkpoints" / f"step_00000099.{EXT[backend]}")
    with pytest.raises(SystemExit, match=rf"step_00000099.{EXT[backend]} was written by a run with {other[0]} "):
        resume(backend, run, data_dir)


@pytest.mark.parametrize("backend", SCRIPTS)
def test_checkpoint_with_other_arrays_is_an_error(backend, straight, data_dir, tmp_path):
    """Arrays that do not fit the model and optimizer are refused even under the right settings."""
    run = tmp_path / "run"
    shutil.copytree(straight(backend), run)
    path = newest(run, backend)
    if backend == "torch":
        ckpt = torch.load(path, weights_only=True)
        ckpt["model"]["fc1.weight"] = torch.zeros(3, 3)
        torch.save(ckpt, path)
    else:
        with np.load(path) as ckpt:
            arrays = {name: ckpt[name] for name in ckpt.files}
        arrays["params/fc1/kernel"] = np.zeros((3, 3), arrays["params/fc1/kernel"].dtype)
        np.savez(path, **arrays)
    with pytest.raises(SystemExit, match=r"(?s)does not fit this run's model and optimizer \(.*(size mismatch for "
                                         r"fc1.weight|fc1/kernel: expected shape \(784, 16\), got \(3, 3\))"):
        resume(backend, run, data_dir)


@pytest.mark.parametrize("backend", SCRIPTS)
def test_damaged_run_files_are_named(backend, straight, data_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(straight(backend), run)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 13, "lo\n')
    with pytest.raises(SystemExit, match=r"metrics.jsonl line 16 is not JSON"):
        resume(backend, run, data_dir)
    (run / "config.json").write_text("{")
    with pytest.raises(SystemExit, match=r"config.json is not valid JSON"):
        resume(backend, run, data_dir)


EVERY = [(key, ()) for key in KEYS] + [(key, ("-lookahead",)) for key in ("momentum", "adam", "adabound", "aggmo")]


@pytest.mark.parametrize("key, extra", EVERY, ids=[k + "".join(e) for k, e in EVERY])
@pytest.mark.parametrize("backend", SCRIPTS)
def test_every_optimizer_resumes_exactly(backend, key, extra, data_dir, tmp_path, monkeypatch):
    """SIGTERM in the middle of epoch 2, then -resume: the optimizer state (moments, maxima,
    AggMo's buffers, AdaBound's base lr, Lookahead's slow weights), the step schedule's position
    and the data order all continue as if never stopped."""
    script = SCRIPTS[backend]
    flags = ("-optimizer", key, *extra, "-weight_decay", "0.01", "-schedule", "step", "-num_epochs", "2")
    script.main(argv(data_dir, tmp_path / "straight", *flags))
    monkeypatch.setenv(runs.FAULT_ENV, "sigterm@5")
    with pytest.raises(SystemExit) as exit_info:
        script.main(argv(data_dir, tmp_path / "stopped", *flags))
    assert exit_info.value.code == 143
    monkeypatch.delenv(runs.FAULT_ENV)
    resume(backend, tmp_path / "stopped", data_dir)
    assert_same_run(tmp_path / "stopped", tmp_path / "straight", backend)


@pytest.mark.parametrize("backend", SCRIPTS)
def test_cifar_with_augmentation_resumes_exactly(backend, cifar_dir, tmp_path, monkeypatch):
    """The CNN with random crops and flips, stopped mid-epoch: the augmentation continues where it
    stopped (its generator is seeded by (seed, epoch) and skipped to the step)."""
    script = SCRIPTS[backend]
    flags = ["-data_dir", str(cifar_dir), "-dataset", "cifar", "-cnn_channels", "4,4,4", "-cnn_dense", "8,8",
             "-batch_size", "16", "-num_epochs", "2", "-optimizer", "nesterov", "-lookahead", "-no_progress"]
    script.main([*flags, "-out_dir", str(tmp_path / "straight")])
    monkeypatch.setenv(runs.FAULT_ENV, "sigint@4")
    with pytest.raises(SystemExit):
        script.main([*flags, "-out_dir", str(tmp_path / "stopped")])
    monkeypatch.delenv(runs.FAULT_ENV)
    resume(backend, tmp_path / "stopped", cifar_dir)
    assert_same_run(tmp_path / "stopped", tmp_path / "straight", backend)
