"""Either script continues the other's run folder (float32 here; the float64 trajectory parity is
in parity_tests/test_cross_backend.py): the records go on, the configuration comes from the run,
checkpoints of both formats are kept and pruned together, and what cannot be read is refused
like the script's own checkpoints."""

import json
import shutil

import numpy as np
import pytest
import torch
from script_helpers import SCRIPTS, argv, assert_same_run, records
from test_faults import Payload

from twinopt import runs

OTHER = {"torch": "jax", "jax": "torch"}
# 3 epochs of 4 steps, stopped after step 6 (mid-epoch 2).
FLAGS = ("-optimizer", "adam", "-lookahead", "-lookahead_k", "3", "-schedule", "cosine", "-num_epochs", "3",
         "-keep_checkpoints", "2")


def stop_at(monkeypatch, step):
    monkeypatch.setenv(runs.FAULT_ENV, f"sigterm@{step}")


def resume(backend, run, data_dir, monkeypatch):
    monkeypatch.delenv(runs.FAULT_ENV, raising=False)
    SCRIPTS[backend].main(["-out_dir", str(run), "-resume", "-no_progress", "-data_dir", str(data_dir)])


@pytest.mark.parametrize("first", SCRIPTS)
def test_the_other_script_continues_the_run(first, data_dir, tmp_path, monkeypatch, capsys):
    second, run = OTHER[first], tmp_path / "run"
    stop_at(monkeypatch, 6)
    with pytest.raises(SystemExit) as stopped:
        SCRIPTS[first].main(argv(data_dir, run, *FLAGS))
    assert stopped.value.code == 143
    resume(second, run, data_dir, monkeypatch)
    assert "resumed from" in capsys.readouterr().out
    got = records(run)
    assert [r["step"] for r in got if "loss" in r] == list(range(1, 13))
    assert [(r["epoch"], r["step"]) for r in got if "loss" not in r] == [(1, 4), (2, 8), (3, 12)]
    with open(run / "config.json") as f:
        config = json.load(f)
    assert config["backend"] == first and config["resumed_backend"] == second and config["optimizer"] == "adam"
    # keep_checkpoints 2 prunes across the formats: the first's mid-epoch one is gone
    ext = {"torch": "pt", "jax": "npz"}
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        f"step_00000008.{ext[second]}", f"step_00000012.{ext[second]}"]
    # float32: the rounding of the two backends differs, the losses stay close
    straight = tmp_path / "straight"
    SCRIPTS[first].main(argv(data_dir, straight, *FLAGS))
    want = [r["loss"] for r in records(straight) if "loss" in r]
    np.testing.assert_allclose([r["loss"] for r in got if "loss" in r], want, rtol=1e-5)


def test_back_and_forth_ends_where_the_torch_run_ends(data_dir, tmp_path, monkeypatch):
    """torch -> jax -> torch in float64 gives the per-step records of the uninterrupted torch run."""
    run, straight = tmp_path / "run", tmp_path / "straight"
    flags = (*FLAGS, "-dtype", "float64")
    SCRIPTS["torch"].main(argv(data_dir, straight, *flags))
    for backend, stop in (("torch", 3), ("jax", 7), ("torch", None)):
        if stop is None:
            resume(backend, run, data_dir, monkeypatch)
            continue
        stop_at(monkeypatch, stop)
        with pytest.raises(SystemExit):
            if stop == 3:
                SCRIPTS[backend].main(argv(data_dir, run, *flags))
            else:
                SCRIPTS[backend].main(["-out_dir", str(run), "-resume", "-no_progress", "-data_dir", str(data_dir)])
    got, want = records(run), records(straight)
    losses = np.array([r["loss"] for r in got if "loss" in r]), np.array([r["loss"] for r in want if "loss" in r])
    assert len(losses[0]) == 12 and np.max(np.abs(losses[0] - losses[1]) / np.abs(losses[1])) <= 1e-9
    assert [r["test_acc"] for r in got if "loss" not in r] == [r["test_acc"] for r in want if "loss" not in r]


def test_pickled_code_in_a_torch_checkpoint_is_refused_by_train_jax(data_dir, tmp_path):
    run, marker = tmp_path / "run", tmp_path / "pwned"
    SCRIPTS["torch"].main(argv(data_dir, run, *FLAGS))
    newest = max((run / "checkpoints").iterdir())
    torch.save({"model": Payload(marker), "config": {}}, newest)
    before = records(run)
    with pytest.raises(SystemExit, match=r"holds pickled code \(GLOBAL 'io open'\), which is never run"):
        SCRIPTS["jax"].main(["-out_dir", str(run), "-resume", "-no_progress", "-data_dir", str(data_dir)])
    assert not marker.exists() and records(run) == before


def test_damaged_checkpoint_of_the_other_format_falls_back(data_dir, tmp_path, monkeypatch):
    """The newest checkpoint (torch's, of step 12) is truncated: train_jax.py keeps it as *.damaged
    and continues from step 8, also torch's, converted."""
    run = tmp_path / "run"
    SCRIPTS["torch"].main(argv(data_dir, run, *FLAGS))
    newest = run / "checkpoints" / "step_00000012.pt"
    newest.write_bytes(newest.read_bytes()[:1000])
    SCRIPTS["jax"].main(["-out_dir", str(run), "-resume", "-no_progress", "-data_dir", str(data_dir)])
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["step_00000008.pt", "step_00000012.npz", "step_00000012.pt.damaged"]
    assert [r["step"] for r in records(run) if "loss" in r] == list(range(1, 13))


def test_checkpoints_without_array_names_still_load_in_jax(data_dir, tmp_path, monkeypatch):
    """A train_jax.py checkpoint from before the arrays were named resumes exactly in JAX; in
    torch it is refused with the reason."""
    run, straight = tmp_path / "run", tmp_path / "straight"
    SCRIPTS["jax"].main(argv(data_dir, straight, *FLAGS))
    stop_at(monkeypatch, 6)
    with pytest.raises(SystemExit):
        SCRIPTS["jax"].main(argv(data_dir, run, *FLAGS))
    path = run / "checkpoints" / "step_00000006.npz"
    with np.load(path) as ckpt:
        names = [n for n in ckpt.files if n != "meta"]
    # The old writer flattened (params, opt_state) with jax.tree_util: the same leaf order as the
    # named entries of each part, params first.
    order = [n for n in names if n.startswith("params/")] + [n for n in names if n.startswith("opt_state/")]
    with np.load(path) as ckpt:
        meta = json.loads(str(ckpt["meta"]))
        arrays = [ckpt[n] for n in order]
    meta["num_leaves"] = len(arrays)
    np.savez(path, *arrays, meta=np.array(json.dumps(meta)))
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    with pytest.raises(SystemExit, match=r"did not name its arrays; continue the run with train_jax.py"):
        resume("torch", copy, data_dir, monkeypatch)
    resume("jax", run, data_dir, monkeypatch)
    assert_same_run(run, straight, "jax")
