"""The optimizer comparison (compare.py, twinopt/comparison.py, jax_train/comparison.py, torch_train/comparison.py)
on a tiny problem the tests write in the real Keras npz layout: 80 random MNIST-shaped training images
(16 held out for validation), 20 test images, an MLP with one hidden layer of 16, batches of 8, float64.

Checked: the runner end to end (records, tables, plots), resumption, the report from the records alone,
vmapped runs against the same runs one at a time (bound 1e-10 relative per step; measured 0 for AdaBound,
at most 2e-16 for Adam and AggMo) and the torch engine against the JAX engine, per step and through the
whole runner (bound 1e-9, SPEC.md's training-level bound; measured at most 4e-16), the validation split,
and the bad inputs. Every test reuses the two programs the first one compiles (groups of 2 runs of each
row) through the session's compilation cache, and AdaBound's group of 1: about 25 s on 2 busy cores.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil

import numpy as np
import pytest
import torch
from script_helpers import write_mnist

from twinopt_cli import compare as script
from jax_train import comparison as jax_engine
from torch_train import comparison as torch_engine
from twinopt import comparison, data

ROWS = ("adabound", "momentum+lookahead")  # the initial lr in AdaBound's state; Lookahead's slow weights
TINY = ["-mlp_hidden", "16", "-batch_size", "8", "-eval_batch_size", "4", "-num_val", "16", "-dtype", "float64",
        "-no_progress"]
VMAP_RTOL = 1e-10  # vmapped vs one at a time, float64
BACKEND_RTOL = 1e-9  # torch vs JAX, float64 (SPEC.md's training-level bound)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_mnist(tmp_path_factory.mktemp("compare_data"), 80, seed=3)


def run_args(data_dir, out, *extra):
    return ["run", "-data_dir", str(data_dir), "-out", str(out), "-rows", ",".join(ROWS), "-lr_factors", "0.5,2",
            "-seeds", "0,1", "-tune_epochs", "2", "-final_epochs", "2", *TINY, *extra]


@pytest.fixture(scope="module")
def finished(data_dir, tmp_path_factory):
    """A finished comparison: 2 rows x 2 learning rates tuned, the chosen one rerun with seeds 0 and 1
    (groups of 2 in both phases: one compiled program per row)."""
    out = tmp_path_factory.mktemp("compare_out")
    script.main(run_args(data_dir, out))
    return out


def records(out):
    return {p.name: p.read_bytes() for p in sorted((out / "mnist" / "records").glob("*.json"))}


def max_rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.abs(b)))


def test_run_writes_records_tables_and_plots(finished):
    written = records(finished)
    assert len(written) == 2 * 2 + 2 * 2  # tune: rows x lrs; final: rows x seeds
    stored = json.loads((finished / "mnist" / "protocol.json").read_text())
    for name, raw in written.items():
        record = json.loads(raw)
        assert name == f"{record['phase']}-{record['row']}-lr{record['lr']:g}-seed{record['seed']}.json"
        assert record["protocol_hash"] == stored["hash"] and record["protocol"] == stored["config"]
        assert record["backend"] == "jax" and record["engine"] in ("vmap", "sequential")
        assert [e["epoch"] for e in record["epochs"]] == [1, 2]
        evals = ("val",) if record["phase"] == "tune" else ("test",)
        metrics = {f"{name}_{m}" for name in evals for m in ("loss", "acc")}
        keys = {"epoch", "train_loss", "train_acc", "epoch_time_s"} | metrics
        assert set(record["epochs"][0]) == keys  # the tune runs never see the test set
    assert {(r["engine"], r["group_size"]) for r in map(json.loads, written.values())} == {("vmap", 2)}
    table = (finished / "mnist" / "results.md").read_text()
    assert all(f"| {row} | " in table for row in ROWS) and stored["hash"] in table
    for plot in ("curves.png", "lr_sensitivity.png"):
        png = (finished / "mnist" / plot).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_the_chosen_learning_rate_is_the_best_on_validation(finished):
    written = [json.loads(raw) for raw in records(finished).values()]
    for row in ROWS:
        tune = {r["lr"]: r["epochs"][-1]["val_acc"] for r in written if r["phase"] == "tune" and r["row"] == row}
        final = {r["lr"] for r in written if r["phase"] == "final" and r["row"] == row}
        assert len(final) == 1 and tune[final.pop()] == max(tune.values())


def test_resume_skips_finished_runs(finished, data_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    before = records(out)
    lost = [name for name in before if name.startswith(f"final-{ROWS[1]}")]  # stopped in the last row's final runs
    for name in lost:
        (out / "mnist" / "records" / name).unlink()
    started = []
    original = jax_engine.VmapEngine.start
    monkeypatch.setattr(jax_engine.VmapEngine, "start",
                        lambda self, row, combos: started.append((row, combos)) or original(self, row, combos))
    script.main(run_args(data_dir, out))
    assert [(row, len(combos)) for row, combos in started] == [(ROWS[1], 2)]  # only the lost runs
    after = records(out)
    assert after.keys() == before.keys()
    assert all(after[name] == raw for name, raw in before.items() if name not in lost)  # the others untouched
    for name in lost:  # the same numbers again, but for the timings
        assert [{**e, "epoch_time_s": 0} for e in json.loads(after[name])["epochs"]] == \
            [{**e, "epoch_time_s": 0} for e in json.loads(before[name])["epochs"]]
    started.clear()
    script.main(run_args(data_dir, out))
    assert started == []


def test_the_torch_backend_writes_the_jax_records(finished, data_dir, tmp_path):
    """The same protocol with -backend torch: the same runs, chosen learning rates and numbers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: OpenMP's synchronisation would cost more than they do
    try:
        script.main(run_args(data_dir, tmp_path, "-backend", "torch"))
    finally:
        torch.set_num_threads(threads)
    jax_records, torch_records = records(finished), records(tmp_path)
    assert torch_records.keys() == jax_records.keys()
    for name in jax_records:
        ours, theirs = json.loads(torch_records[name]), json.loads(jax_records[name])
        assert (ours["backend"], ours["engine"], theirs["backend"]) == ("torch", "sequential", "jax")
        for key in ours["epochs"][0]:
            values = [[e[key] for e in r["epochs"]] for r in (ours, theirs)]
            if key.endswith("_loss"):
                assert max_rel(*values) <= BACKEND_RTOL
            elif key.endswith("_acc"):
                assert values[0] == values[1]


def test_report_rebuilds_tables_from_the_records_alone(finished, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    for name in ("results.md", "curves.png", "lr_sensitivity.png"):
        (out / "mnist" / name).unlink()
    monkeypatch.setattr(comparison, "train_runs", None)  # no training
    script.main(["report", "-out", str(out)])
    assert (out / "mnist" / "results.md").read_text() == (finished / "mnist" / "results.md").read_text()
    for name in ("curves.png", "lr_sensitivity.png"):
        assert (out / "mnist" / name).stat().st_size > 10_000


COMBOS = [(0.01, 0), (0.003, 1)]  # two learning rates, two seeds


@pytest.fixture(scope="module")
def engine_runs(data_dir):
    """The same 2 runs of each row, 2 epochs: vmapped, and by the torch engine; for the first row also one
    at a time (the same engine with its memory limit lowered below any group's estimate: the fallback)."""
    protocol = comparison.make_protocol("mnist", "jax", num_val=16, batch_size=8, dtype="float64", hidden=(16,))
    problem = comparison.load_problem(protocol, data_dir, eval_batch_size=4)  # TINY's problem
    runs, threads = {}, torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: OpenMP's synchronisation would cost more than they do
    try:
        for row in ROWS:
            with jax_engine.precision("float64"):
                engine = jax_engine.VmapEngine(problem)
                runs[row, "vmap"] = comparison.train_runs(engine, problem, row, COMBOS, 2, evals=("val", "test"))
                if row == ROWS[0]:
                    engine.memory_limit = 1
                    runs[row, "alone"] = comparison.train_runs(engine, problem, row, COMBOS, 2, evals=("val", "test"))
            with torch_engine.precision("float64"):
                runs[row, "torch"] = comparison.train_runs(torch_engine.SequentialEngine(problem), problem, row, COMBOS,
                                                        2, evals=("val", "test"))
    finally:
        torch.set_num_threads(threads)
    return runs


def epoch_values(runs, key):
    return [[e[key] for e in r["epochs"]] for r in runs]


def test_vmapped_runs_equal_runs_one_at_a_time(engine_runs):
    """AdaBound: the one optimizer whose state depends on the learning rate at init. (The torch test
    below checks the vmapped runs of both rows against torch's one at a time.)"""
    vmapped, alone = engine_runs[ROWS[0], "vmap"], engine_runs[ROWS[0], "alone"]
    assert [(r["engine"], r["group_size"]) for r in vmapped] == [("vmap", 2)] * 2
    assert [(r["engine"], r["group_size"]) for r in alone] == [("sequential", 1)] * 2
    losses = [r["step_loss"] for r in vmapped], [r["step_loss"] for r in alone]
    assert np.shape(losses[0]) == (2, 2 * 8)
    assert max_rel(*losses) <= VMAP_RTOL
    for key in ("val_loss", "test_loss"):
        assert max_rel(epoch_values(vmapped, key), epoch_values(alone, key)) <= VMAP_RTOL
    assert len({tuple(r["step_loss"]) for r in vmapped}) == 2  # the runs differ: lr and seed reach each run


@pytest.mark.parametrize("row", ROWS)
def test_torch_engine_gives_the_jax_engine_losses(engine_runs, row):
    jax_runs, torch_runs = engine_runs[row, "vmap"], engine_runs[row, "torch"]
    assert [(r["engine"], r["group_size"]) for r in torch_runs] == [("sequential", 1)] * 2
    assert max_rel([r["step_loss"] for r in torch_runs], [r["step_loss"] for r in jax_runs]) <= BACKEND_RTOL
    for key in ("train_loss", "val_loss", "test_loss"):
        assert max_rel(epoch_values(torch_runs, key), epoch_values(jax_runs, key)) <= BACKEND_RTOL
    for key in ("train_acc", "val_acc", "test_acc"):
        assert epoch_values(torch_runs, key) == epoch_values(jax_runs, key)


def test_speedup_writes_its_measurement(data_dir, tmp_path):
    out = tmp_path / "speedup.json"
    script.main(["speedup", "-data_dir", str(data_dir), "-row", ROWS[0], "-lr_factors", "0.5,2", "-out", str(out),
                 *TINY])
    result = json.loads(out.read_text())
    assert result["combos"] == [[0.0005, 0], [0.002, 0]] and result["epochs"] == 1  # adabound's grid, the tune seed
    for mode in ("vmap", "sequential"):
        assert result[mode]["train_s"] > 0 and result[mode]["compile_s"] > 0
    assert result["speedup_train"] > 0 and result["max_rel_loss_diff"] <= VMAP_RTOL
    assert result["first_step_apart"] == [None, None]
    assert result["vmap"]["final_train_loss"] == pytest.approx(result["sequential"]["final_train_loss"], rel=VMAP_RTOL)


def test_validation_split():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (200, 28, 28, 1), dtype=np.uint8), np.repeat(np.arange(10), 20)
    x[:, 0, 0, 0] = np.arange(200)  # tell the images apart
    for stratify in (False, True):
        x_tr, y_tr, x_val, y_val = data.validation_split(x, y, 50, seed=1, stratify=stratify)
        assert len(y_tr) == 150 and len(y_val) == 50
        ids = np.concatenate([x_tr[:, 0, 0, 0], x_val[:, 0, 0, 0]])
        assert sorted(ids) == list(range(200))  # disjoint and complete, each part in the original order
        assert list(x_tr[:, 0, 0, 0]) == sorted(x_tr[:, 0, 0, 0])
        again = data.validation_split(x, y, 50, seed=1, stratify=stratify)
        assert np.array_equal(again[3], y_val) and np.array_equal(again[2], x_val)
    assert np.bincount(y_val, minlength=10).tolist() == [5] * 10  # stratified: 50 of 200 from each class
    assert not np.array_equal(data.validation_split(x, y, 50, seed=2)[2], data.validation_split(x, y, 50, seed=1)[2])
    with pytest.raises(data.DataError, match="leaves no training examples"):
        data.validation_split(x, y, 200)


@pytest.mark.parametrize("extra, message", [
    (["-rows", "sgd,adamm"], "unknown optimizer row 'adamm'; choose from: sgd, momentum"),
    (["-lr_factors", ""], "the learning-rate grid is empty: give -lr_factors"),
    (["-lr_factors", "1,-2"], "every multiplier must be a positive number"),
    (["-num_val", "80"], "-num_val 80 is not smaller than the 80 training images"),
    (["-num_train", "65"], "-num_train 65 is more than the 64 training images left after the validation split"),
    (["-seeds", ""], "no seeds for the final runs: give -seeds"),
])
def test_bad_input_names_the_fix(data_dir, tmp_path, extra, message):
    with pytest.raises(SystemExit, match="^error: .*" + re.escape(message)):
        script.main(run_args(data_dir, tmp_path / "out", *extra))
    assert not (tmp_path / "out").exists()


def test_a_folder_of_another_protocol_is_refused(finished, data_dir, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    before = records(out)
    with pytest.raises(SystemExit, match=r"holds records of another protocol \(.*tune_epochs 2 there, 3 here.*choose "
                       "another -out"):
        script.main(run_args(data_dir, out, "-tune_epochs", "3"))
    with pytest.raises(SystemExit, match="backend 'jax' there, 'torch' here"):
        script.main(run_args(data_dir, out, "-backend", "torch"))
    record = out / "mnist" / "records" / next(iter(before))
    record.write_text(record.read_text().replace('"protocol_hash": "', '"protocol_hash": "x'))
    with pytest.raises(SystemExit, match="is a record of another protocol .* move it away or delete it"):
        script.main(["report", "-out", str(out)])
    assert records(out).keys() == before.keys()


def test_a_folder_that_lists_every_centre_accepts_a_new_row(finished, data_dir, tmp_path):
    """Folders written before the grid centres left the protocol's settings list every key's centre
    in protocol.json (and their hash covers them). They stay this protocol while each centre they
    list is still the key's: a row added to the registry later runs in them, its records carrying
    the folder's hash; a centre changed since makes it another protocol."""
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    folder = out / "mnist"
    stored = json.loads((folder / "protocol.json").read_text())
    old_config = {**stored["config"], "lr_centres": {"sgd": comparison.LR_CENTRES["sgd"],
                                                      "adabound": comparison.LR_CENTRES["adabound"]}}
    old_hash = hashlib.sha256(json.dumps(old_config, sort_keys=True).encode()).hexdigest()[:12]
    (folder / "protocol.json").write_text(json.dumps({"hash": old_hash, "config": old_config}))
    for path in (folder / "records").glob("*.json"):
        path.write_text(path.read_text().replace(stored["hash"], old_hash))
    before = records(out)
    script.main(run_args(data_dir, out))  # every run there: nothing to do
    assert records(out) == before
    script.main(run_args(data_dir, out, "-rows", "sgd"))
    added = {name: json.loads(raw) for name, raw in records(out).items() if name not in before}
    assert len(added) == 2 + 2 and all(r["protocol_hash"] == old_hash and r["row"] == "sgd" for r in added.values())
    assert all(r["lr_centre"] == comparison.LR_CENTRES["sgd"] for r in added.values())
    old_config["lr_centres"]["adabound"] *= 2
    (folder / "protocol.json").write_text(json.dumps({"hash": old_hash, "config": old_config}))
    with pytest.raises(SystemExit, match="holds records of another protocol .*lr_centres"):
        script.main(run_args(data_dir, out))
