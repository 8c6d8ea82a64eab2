"""The training scripts end to end on tiny data: the run folder, resume, bad input."""

import json
import os

import pytest
from script_helpers import SCRIPTS, records, without_times
from script_helpers import argv as base_argv


def argv(data_dir, out_dir, *extra):
    return base_argv(data_dir, out_dir, "-optimizer", "adam", "-lookahead", "-lookahead_k", "3", "-schedule", "cosine",
                     *extra)


@pytest.mark.parametrize("backend", SCRIPTS)
def test_run_folder_contents(backend, data_dir, tmp_path):
    SCRIPTS[backend].main(argv(data_dir, tmp_path / "run", "-num_epochs", "2"))
    config = json.load(open(tmp_path / "run" / "config.json"))
    assert config["backend"] == backend and config["data"].startswith(f"files: {data_dir}")
    recs = records(tmp_path / "run")
    assert [r["step"] for r in recs if "loss" in r] == list(range(1, 9))
    assert [r["epoch"] for r in recs if "test_acc" in r] == [1, 2]
    ext = "pt" if backend == "torch" else "npz"
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == [f"step_00000004.{ext}", f"step_00000008.{ext}"]


@pytest.mark.parametrize("backend", SCRIPTS)
def test_resume_continues_exactly(backend, data_dir, tmp_path):
    """A run that lost its last two epochs (their checkpoints) resumes from epoch 1 and gives
    the same records as the run that never stopped: schedule, Lookahead, data order included."""
    script = SCRIPTS[backend]
    for name in ("straight", "resumed"):
        script.main(argv(data_dir, tmp_path / name, "-num_epochs", "3"))
    straight = records(tmp_path / "straight")
    for name in sorted(os.listdir(tmp_path / "resumed" / "checkpoints"))[1:]:
        os.remove(tmp_path / "resumed" / "checkpoints" / name)
    # The configuration comes from the run: only the folder (and where the data is) is given.
    script.main(["-out_dir", str(tmp_path / "resumed"), "-resume", "-no_progress", "-data_dir", str(data_dir)])
    assert without_times(records(tmp_path / "resumed")) == without_times(straight)
    with pytest.raises(SystemExit, match="fixes its cosine schedule"):
        script.main(["-out_dir", str(tmp_path / "resumed"), "-resume", "-num_epochs", "5"])


@pytest.mark.parametrize("stop_at", [6, 4], ids=["mid-epoch", "last-step-of-epoch"])
@pytest.mark.parametrize("backend", SCRIPTS)
def test_signal_stops_saves_and_resumes_exactly(backend, stop_at, data_dir, tmp_path, monkeypatch, capsys):
    """SIGINT (sent by the run itself after step ``stop_at``, through the real handler) finishes
    the step, saves, exits 130 saying how to resume; the resumed run's records equal those of a
    run never stopped, the interrupted epoch's train loss and accuracy included."""
    script = SCRIPTS[backend]
    script.main(argv(data_dir, tmp_path / "straight", "-num_epochs", "3"))
    monkeypatch.setenv("TWINOPT_FAULT", f"sigint@{stop_at}")
    with pytest.raises(SystemExit) as exit_info:
        script.main(argv(data_dir, tmp_path / "stopped", "-num_epochs", "3"))
    assert exit_info.value.code == 130
    err = capsys.readouterr().err
    assert f"SIGINT: stopped after step {stop_at}" in err and f"-out_dir {tmp_path / 'stopped'} -resume" in err
    assert [r["step"] for r in records(tmp_path / "stopped")][-1] == stop_at
    monkeypatch.delenv("TWINOPT_FAULT")
    script.main(["-out_dir", str(tmp_path / "stopped"), "-resume", "-no_progress", "-data_dir", str(data_dir)])
    assert without_times(records(tmp_path / "stopped")) == without_times(records(tmp_path / "straight"))


def test_sigterm_is_caught_too():
    import signal

    from twinopt.training import StopOnSignal
    with StopOnSignal() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested(1) and stop.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.parametrize("backend", SCRIPTS)
def test_non_empty_run_folder_is_refused(backend, data_dir, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="is not empty; continue it with -resume"):
        SCRIPTS[backend].main(argv(data_dir, tmp_path / "run"))
    assert os.listdir(tmp_path / "run") == ["notes.txt"]


@pytest.mark.parametrize("backend", SCRIPTS)
def test_resume_errors(backend, data_dir, tmp_path):
    with pytest.raises(SystemExit, match="no config.json"):
        SCRIPTS[backend].main(argv(data_dir, tmp_path / "none", "-resume"))
    SCRIPTS[backend].main(argv(data_dir, tmp_path / "run", "-num_epochs", "1"))
    with pytest.raises(SystemExit, match="-optimizer sgd differs from the run's adam"):
        SCRIPTS[backend].main(argv(data_dir, tmp_path / "run", "-resume", "-optimizer", "sgd"))
    for name in os.listdir(tmp_path / "run" / "checkpoints"):
        os.remove(tmp_path / "run" / "checkpoints" / name)
    with pytest.raises(SystemExit, match=r"no checkpoint \(step_\*\.pt, step_\*\.npz\)"):
        SCRIPTS[backend].main(argv(data_dir, tmp_path / "run", "-resume"))


@pytest.mark.parametrize("backend", SCRIPTS)
def test_batch_larger_than_data_is_refused(backend, data_dir, tmp_path):
    with pytest.raises(SystemExit, match="-batch_size 128 is larger than the 64 training images"):
        SCRIPTS[backend].main(argv(data_dir, tmp_path / "run", "-batch_size", "128"))


@pytest.mark.parametrize("backend", SCRIPTS)
def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(backend, data_dir, tmp_path):
    """Weights blown up to 1e30 (as a diverging run's would be) give an Inf/NaN loss at the next
    step: the script names the step, exits non-zero and leaves the run's files as they were."""
    import numpy as np
    import torch

    run = tmp_path / "run"
    SCRIPTS[backend].main(argv(data_dir, run, "-num_epochs", "1", "-schedule", "constant"))
    path = next((run / "checkpoints").iterdir())
    if backend == "torch":
        ckpt = torch.load(path, weights_only=True)
        ckpt["model"] = {k: v * 1e30 for k, v in ckpt["model"].items()}
        torch.save(ckpt, path)
    else:
        with np.load(path) as ckpt:
            arrays = {name: ckpt[name] for name in ckpt.files}
        for name in arrays:
            if name.startswith("params/"):
                arrays[name] = arrays[name] * np.float32(1e30)
        np.savez(path, **arrays)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "config.json"}
    with pytest.raises(SystemExit, match=r"non-finite training loss .*at step 5; the last good checkpoint is kept"):
        SCRIPTS[backend].main(["-out_dir", str(run), "-resume", "-num_epochs", "2", "-no_progress",
                               "-data_dir", str(data_dir)])
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "config.json"} == before


def test_jax_float32_run_does_not_depend_on_the_callers_x64(data_dir, tmp_path):
    """A float32 run is the same whether the calling process enabled jax_enable_x64 or not (the
    parity suite does), and the caller's setting is restored afterwards."""
    import jax
    from script_helpers import assert_same_run

    previous = jax.config.jax_enable_x64
    try:
        for x64 in (False, True):
            jax.config.update("jax_enable_x64", x64)
            SCRIPTS["jax"].main(argv(data_dir, tmp_path / f"x64-{x64}", "-num_epochs", "3"))
            assert jax.config.jax_enable_x64 == x64
    finally:
        jax.config.update("jax_enable_x64", previous)
    assert_same_run(tmp_path / "x64-True", tmp_path / "x64-False", "jax")


@pytest.mark.parametrize("backend", SCRIPTS)
def test_resume_with_tuple_hyperparameters(backend, data_dir, tmp_path):
    """-betas is a tuple in the run and a list in the checkpoint's JSON: both are the same run
    (a resume used to refuse its own checkpoint)."""
    script = SCRIPTS[backend]
    run = base_argv(data_dir, tmp_path / "run", "-optimizer", "adam", "-betas", "0.8,0.99")
    script.main([*run, "-num_epochs", "1"])
    script.main([*run, "-num_epochs", "2", "-resume"])
    assert [r["epoch"] for r in records(tmp_path / "run") if "test_acc" in r] == [1, 2]
