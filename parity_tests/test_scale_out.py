"""Scale-out parity: several devices or processes follow the trajectory of one (float64, 1e-9).

- JAX: 4 CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=4``; the device count is
  fixed when JAX starts, so this runs in a subprocess), the optimizer state replicated and sharded
  (``-shard_optimizer``), against ``-devices 1`` in the same process.
- PyTorch: ``torchrun --nproc_per_node 2`` (gloo, DistributedDataParallel), against one process;
  and a torchrun run stopped by SIGTERM mid-epoch and resumed under torchrun.

Each subprocess runs all its cases (``python -m parity_tests.test_scale_out jax|torch OUT DATA``).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# The cross-backend suite's tiny problem: 6 steps an epoch, 2 epochs, float64 bound 1e-9.
from parity_tests.test_cross_backend import BATCH, EPOCHS, IMAGES, MODEL_FLAGS, TOL, rel, write_fake_data
from twinopt.registry import KEYS

REPO = Path(__file__).resolve().parents[1]
CASES = {
    "adam+lookahead": ["-optimizer", "adam", "-lookahead", "-lookahead_k", "4"],
    "momentum": ["-optimizer", "momentum", "-weight_decay", "1e-3"],
    "aggmo": ["-optimizer", "aggmo"],
    "adabound-cosine": ["-optimizer", "adabound", "-schedule", "cosine"],
}
RUNS = {  # (dataset, case) the subprocesses run
    "jax": [("mnist", case) for case in CASES if case != "momentum"] + [("cifar", "adam+lookahead")],
    "torch": [("mnist", case) for case in CASES] + [("cifar", "adam+lookahead")],
}
RESUMED = ("mnist", "adam+lookahead")  # the torchrun run stopped and resumed
SETTINGS = {"jax": {"1": ["-devices", "1"], "4": [], "4-sharded": ["-shard_optimizer"]},
            "torch": {"2": []}}


def flags(data_dir, dataset, case):
    return ["-dataset", dataset, "-data_dir", str(data_dir), "-batch_size", str(BATCH), "-num_epochs", str(EPOCHS),
            "-dtype", "float64", "-no_progress", "-eval_batch_size", "20", *MODEL_FLAGS[dataset], *CASES[case]]


def losses(run):
    with open(run / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    return np.array([r["loss"] for r in records if "loss" in r]), [r["test_acc"] for r in records if "loss" not in r]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    write_fake_data(folder)
    return folder


def run_module(command, env=None):
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    env.pop("TWINOPT_FAULT", None)
    out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_jax_on_four_devices_with_and_without_sharded_state(data_dir, tmp_path):
    out = run_module([sys.executable, "-m", "parity_tests.test_scale_out", "jax", str(tmp_path), str(data_dir)],
                     env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    sharded = json.loads(out.strip().splitlines()[-1])
    # every optimizer-state array with an axis divisible by 4 is split in 4 (a quarter per device)
    assert sharded["fractions"] and set(sharded["fractions"]) == {0.25}, sharded
    for dataset, case in RUNS["jax"]:
        want, want_acc = losses(tmp_path / f"{dataset}-{case}-1")
        for setting in ("4", "4-sharded"):
            got, got_acc = losses(tmp_path / f"{dataset}-{case}-{setting}")
            assert len(got) == len(want) == EPOCHS * IMAGES // BATCH
            assert rel(got, want) <= TOL, (dataset, case, setting, rel(got, want))
            assert got_acc == want_acc
        assert abs(want[-1] - want[0]) > 1e-6


def test_jax_on_two_processes_with_sharded_state(data_dir, tmp_path):
    """jax.distributed: 2 processes of 2 CPU devices each (gloo collectives), the state sharded
    over the 4; process 0 writes the run."""
    port = 12000 + os.getpid() % 20000
    argv = [*flags(data_dir, *RESUMED), "-distributed", "-shard_optimizer", "-out_dir", str(tmp_path / "run")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": "2"}
    procs = [subprocess.Popen([sys.executable, "train_jax.py", *argv], cwd=REPO, env={**env, "JAX_PROCESS_ID": str(i)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "devices: 4 x cpu in 2 process(es)" in outputs[0] and "epoch 2/2" not in outputs[1]
    from jax_train import train as train_jax

    train_jax.main([*flags(data_dir, *RESUMED), "-out_dir", str(tmp_path / "single")])
    (got, got_acc), (want, want_acc) = losses(tmp_path / "run"), losses(tmp_path / "single")
    assert rel(got, want) <= TOL and got_acc == want_acc


@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None, reason="no torchrun")
def test_torch_on_two_processes_and_resume_under_torchrun(data_dir, tmp_path):
    from torch_train import train as train_torch

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    run_module([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "parity_tests.test_scale_out", "torch",
                str(tmp_path), str(data_dir)])
    for dataset, case in RUNS["torch"]:
        single = tmp_path / f"{dataset}-{case}-single"
        train_torch.main([*flags(data_dir, dataset, case), "-out_dir", str(single)])
        want, want_acc = losses(single)
        for name in ("2", "2-resumed") if (dataset, case) == RESUMED else ("2",):
            got, got_acc = losses(tmp_path / f"{dataset}-{case}-{name}")
            assert rel(got, want) <= TOL, (dataset, case, name, rel(got, want))
            assert got_acc == want_acc
    # FSDP2: every optimizer steps on sharded params as on whole ones (float64, 1e-12: update level)
    with open(tmp_path / "fsdp.json") as f:
        fsdp = json.load(f)
    assert len(fsdp) == len(KEYS) * 4 and max(fsdp.values()) <= 1e-12, fsdp
    # only rank 0 wrote: one metrics file, checkpoints of the epochs' ends and of the stop
    resumed = tmp_path / f"{'-'.join(RESUMED)}-2-resumed"
    assert sorted(p.name for p in (resumed / "checkpoints").iterdir()) == [
        "step_00000005.pt", "step_00000006.pt", "step_00000012.pt"]


def _jax_main(out, data_dir):
    import jax
    from jax.sharding import Mesh

    from jax_train import train as train_jax
    from jax_train.models import build_model
    from flax import nnx

    assert jax.device_count() == 4, jax.devices()
    for dataset, case in RUNS["jax"]:
        for setting, extra in SETTINGS["jax"].items():
            run = out / f"{dataset}-{case}-{setting}"
            train_jax.main([*flags(data_dir, dataset, case), *extra, "-out_dir", str(run)])
    # what -shard_optimizer places on each device: a quarter of every evenly splittable state array
    jax.config.update("jax_enable_x64", True)
    _, params = nnx.split(build_model("mnist", 0, np.float64, hidden=(16, 8)))
    args = train_jax.cli.parse_args(flags(data_dir, "mnist", "adam+lookahead"), "jax")
    state = train_jax.make_optimizer(args, 12).init(params)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    state = jax.device_put(state, train_jax.shardings(mesh, state, shard=True))
    fractions = [leaf.addressable_shards[0].data.size / leaf.size for leaf in jax.tree.leaves(state)
                 if any(n % 4 == 0 for n in leaf.shape)]
    print(json.dumps({"fractions": sorted(set(fractions))}))


def _torch_main(out, data_dir):
    import torch.distributed as dist

    from torch_train import train as train_torch
    from twinopt import runs

    dist.init_process_group("gloo")  # one group for all the runs: train_torch.main uses it and leaves it

    for dataset, case in RUNS["torch"]:
        train_torch.main([*flags(data_dir, dataset, case), "-out_dir", str(out / f"{dataset}-{case}-2")])
    run = out / f"{'-'.join(RESUMED)}-2-resumed"
    os.environ[runs.FAULT_ENV] = "sigterm@5"
    try:
        train_torch.main([*flags(data_dir, *RESUMED), "-out_dir", str(run)])
    except SystemExit as stopped:
        assert stopped.code == 143, stopped
    del os.environ[runs.FAULT_ENV]
    train_torch.main(["-out_dir", str(run), "-resume", "-no_progress", "-data_dir", str(data_dir)])
    errors = _fsdp_errors()
    if dist.get_rank() == 0:
        with open(out / "fsdp.json", "w") as f:
            json.dump(errors, f)


def _fsdp_errors():
    """Every torch_opt optimizer (and Lookahead), both paths, on an MLP whose params FSDP2's
    fully_shard splits over the 2 ranks (each rank its half of the batch), against the same
    steps unsharded in one process: the largest error relative to each tensor's scale."""
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor, Shard

    import torch_opt
    from torch_train.models import build_model

    torch.set_default_dtype(torch.float64)
    rank, mesh = torch.distributed.get_rank(), init_device_mesh("cpu", (2,))
    rng = np.random.default_rng(0)
    x, y = torch.tensor(rng.standard_normal((8, 28, 28, 1))), torch.tensor(rng.integers(0, 10, 8))

    def train(key, lookahead, foreach, sharded):
        model = build_model("mnist", 0, torch.float64, hidden=(16, 8))
        if sharded:
            fully_shard(model, mesh=mesh)
            assert all(isinstance(p, DTensor) and p.placements == (Shard(0),) for p in model.parameters())
        opt = torch_opt.OPTIMIZERS[key](model.parameters(), foreach=foreach)
        opt = torch_opt.Lookahead(opt, k=2, foreach=foreach) if lookahead else opt
        rows = slice(4 * rank, 4 * rank + 4) if sharded else slice(0, 8)
        for _ in range(5):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[rows]), y[rows]).backward()
            opt.step()
        return [(p.full_tensor() if sharded else p).detach() for p in model.parameters()]

    errors = {}
    for key in torch_opt.OPTIMIZERS:
        for lookahead in (False, True):
            for foreach in (False, True):
                want, got = train(key, lookahead, foreach, False), train(key, lookahead, foreach, True)
                errors[f"{key}{'+lookahead' if lookahead else ''}{'-foreach' if foreach else ''}"] = max(
                    float(((a - b).abs() / b.abs().max()).max()) for a, b in zip(got, want))
    return errors


if __name__ == "__main__":
    backend, out, data = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    {"jax": _jax_main, "torch": _torch_main}[backend](out, data)
