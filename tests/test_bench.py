"""The benchmarks (bench.py): parameter sets, byte counts, peers that compute the same algorithm,
and the commands end to end on tiny sizes (timings themselves are not asserted: machines are noisy)."""

import functools
import json
import math

import numpy as np
import pytest
import torch

from twinopt_cli import bench as bench_cli
import torch_opt
from jax_train import benchmarks as jax_bench
from torch_train import benchmarks as torch_bench
from twinopt import benchmarks, throughput
from twinopt.registry import INFO, KEYS, ROWS, jax_name, split_row


def test_param_sets_have_the_documented_sizes():
    assert (len(benchmarks.resnet18_shapes()), benchmarks.numel(benchmarks.resnet18_shapes())) == (62, 11_689_512)
    assert benchmarks.numel(benchmarks.PARAM_SETS["single64m"]()) == 64 * 2**20
    assert benchmarks.numel(benchmarks.PARAM_SETS["cnn"]()) == 895_210  # the 3c3d CNN
    for total in (10**4, 10**6, 10**8):
        shapes = benchmarks.scaled_shapes(total)
        assert len(shapes) == 62 and abs(benchmarks.numel(shapes) - total) / total < 0.01


@pytest.mark.parametrize("key", KEYS)
def test_state_array_counts_match_the_optimizers_state(key):
    """min_bytes counts the param-shaped state arrays each algorithm keeps; check the table
    against torch_opt's actual state after a step."""
    p = torch.nn.Parameter(torch.ones(6, 5))
    opt = torch_opt.OPTIMIZERS[key]([p])
    p.grad = torch.ones(6, 5)
    opt.step()
    arrays = sum(t.numel() // p.numel() for t in opt.state[p].values() if torch.is_tensor(t) and t.numel() > 1)
    assert arrays == INFO[key].state_arrays
    assert benchmarks.min_bytes(key, 1000) == (3 + 2 * arrays) * 4000
    if f"{key}+lookahead" in ROWS:  # the slow weights: read and written once every k = 5 steps
        assert benchmarks.min_bytes(f"{key}+lookahead", 1000) == pytest.approx((3 + 2 * arrays + 2 / 5) * 4000)


def final_params(make):
    """The params (float64, flat) after 12 steps of ``make(params)`` on a fixed problem. The steps run
    under a float64 default dtype, in which torch.optim and torch_opt keep scalar state (SPEC.md): under
    float32, torch.optim.ASGD's foreach path computes its rate in float32 and its per-tensor path in a
    double, and its own two paths part by 2.5e-11 here."""
    params = [torch.nn.Parameter(p.detach().double()) for p in torch_bench.make_params([(7, 3), (11,)], seed=1)]
    grads = [torch.linspace(-1e-3, 2e-3, p.numel(), dtype=torch.float64).view_as(p) for p in params]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        opt = make(params)
        for _ in range(12):
            for p, g in zip(params, grads):  # torch.optim's foreach Nesterov adds into p.grad
                p.grad = g.clone()
            opt.step()
    finally:
        torch.set_default_dtype(previous)
    return torch.cat([p.detach().flatten() for p in params])


def with_settings(key):
    """The names the benchmark gives the key's torch peers that agree only under settings (checked below)."""
    peers = [p for p in INFO[key].peers_of("torch") if p.ours or p.theirs]
    return {f"peer: {p.label}{suffix}" for p in peers for suffix in ("", " foreach")}


@pytest.mark.parametrize("row", ROWS)
def test_every_torch_implementation_of_a_row_computes_the_same_steps(row):
    """Peers are configured as the same algorithm: 12 steps of each (float64) give ours' params, to
    the agreement the registry states for each (None: another algorithm, timed only)."""
    finals, rtols = {}, {}
    for kind, name, make, rtol in torch_bench.implementations(row):
        finals[f"{kind}: {name}"], rtols[f"{kind}: {name}"] = final_params(make), rtol
    ours = next(v for k, v in finals.items() if k.startswith("ours"))
    assert len(finals) >= 2
    for name, value in finals.items():
        if name.startswith("peer") and rtols[name] is not None and name not in with_settings(split_row(row)[0]):
            torch.testing.assert_close(value, ours, rtol=rtols[name], atol=rtols[name] / 100, msg=name)
        elif name.startswith("ours"):
            torch.testing.assert_close(value, ours, rtol=1e-12, atol=1e-14, msg=name)


def torch_kwargs(key, jax_kwargs):
    """A peer's ``ours`` (JAX names) as torch_opt arguments: ``b1`` joins ``b2``'s default in ``betas``."""
    out = {}
    for name, default in INFO[key].defaults.items():
        target = jax_name(key, name)
        if isinstance(target, tuple):
            if any(t in jax_kwargs for t in target):
                out[name] = tuple(jax_kwargs.get(t, d) for t, d in zip(target, default))
        elif target in jax_kwargs:
            out[name] = jax_kwargs[target]
    return out


@pytest.mark.parametrize(("key", "peer"), [
    pytest.param(key, peer, id=f"{key}-{peer.target}")
    for key in KEYS for peer in INFO[key].peers_of("torch") if (peer.ours or peer.theirs) and peer.rtol is not None])
def test_torch_peer_computes_our_steps_under_the_documented_setting(key, peer):
    """As for the optax peers: a torch peer with settings misses ours (float64, every path of both)
    by more than 100x its rtol without them and agrees to its rtol with them."""
    cls = torch_bench.load(peer.target)
    if cls is None:
        pytest.skip(f"{peer.label} is not installed")
    for reproduce in (False, True):
        ours_kw, theirs_kw = (torch_kwargs(key, peer.ours), peer.theirs) if reproduce else ({}, {})
        for foreach in (False, True):
            ours = final_params(functools.partial(torch_opt.OPTIMIZERS[key], lr=peer.lr, foreach=foreach, **ours_kw))
            for path in ({"foreach": False}, {"foreach": True}) if peer.foreach else ({},):
                theirs = final_params(functools.partial(cls, lr=peer.lr, **peer.kwargs, **theirs_kw, **path))
                error = float(((theirs - ours).abs() / ours.abs().max()).max())
                if reproduce:
                    assert error <= peer.rtol, (foreach, path, error)
                else:
                    assert error > 100 * peer.rtol, (foreach, path, error)


@pytest.mark.parametrize("row", ["adam", "nesterov", "adam+lookahead", "aggmo", "adopt"])  # adopt: optax.contrib
def test_jax_implementations_of_a_row_compute_the_same_steps(row):
    shapes = [(7, 3), (11,)]
    finals = []
    for _, _, tx, wrap in jax_bench.implementations(row):
        params, grads = jax_bench.make_params(shapes, seed=1)
        params = wrap(params) if wrap else params
        state, step = tx.init(params), jax_bench._step_fn(tx)
        for _ in range(5):
            params, state = step(params, state, grads)
        finals.append(np.concatenate([np.ravel(p) for p in (params.fast if wrap else params)]))
    for value in finals:
        np.testing.assert_allclose(value, finals[0], rtol=1e-5, atol=1e-6)


def test_ratios_and_bandwidth_fractions():
    results = [
        {"set": "-", "backend": "torch", "row": "triad", "kind": "machine", "gbps": 20.0},
        {"set": "s", "backend": "torch", "row": "adam", "kind": "ours", "impl": "fused", "time_s": 0.002, "gbps": 10.0},
        {"set": "s", "backend": "torch", "row": "adam", "kind": "peer", "impl": "a", "time_s": 0.004, "gbps": 5.0},
        {"set": "s", "backend": "torch", "row": "adam", "kind": "peer", "impl": "b", "time_s": 0.001, "gbps": 20.0},
        {"set": "s", "backend": "jax", "row": "aggmo", "kind": "ours", "impl": "jit", "time_s": 0.001, "gbps": 4.0},
    ]
    benchmarks.add_ratios(results)
    assert [r.get("ratio") for r in results[1:]] == [2.0, 4.0, 1.0, None]
    assert results[1]["triad_fraction"] == 0.5
    table = benchmarks.step_summary(results, "s")
    assert "| adam | 2 (fused) | 1 (b) | 2.00 | 50% |" in table
    assert "| aggmo |  |  |  |  | 1 | no peer | - | 20% |" in table


def test_step_scaling_and_report_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(benchmarks, "TRIAD_ELEMENTS", 4096)
    monkeypatch.setitem(benchmarks.PARAM_SETS, "cnn", lambda: [(64, 3, 5, 5), (64,)])
    monkeypatch.setattr(bench_cli, "SCALING_SIZES", (10**3, 10**4))
    out = tmp_path / "bench"
    fast = ["-budget_s", "0", "-out", str(out)]
    bench_cli.main(["step", "-sets", "cnn", "-rows", "adam,aggmo,adam+lookahead", *fast])
    bench_cli.main(["scaling", "-rows", "adam", *fast])
    payload = json.loads((out / "step.json").read_text())
    rows = {(r["backend"], r["row"], r["kind"], r["impl"]) for r in payload["results"]}
    assert ("torch", "adam", "peer", "torch.optim fused") in rows and ("jax", "adam", "peer", "optax.adam jit") in rows
    assert ("torch", "adam", "ours", "fused") in rows and ("jax", "triad", "machine", "a = b + s*c") in rows
    assert all(math.isfinite(r["time_s"]) and r["time_s"] > 0 for r in payload["results"])
    step_md = (out / "step.md").read_text()
    assert "### cnn: 4,864 parameters in 2 tensors" in step_md and "| adam+lookahead |" in step_md
    assert (out / "scaling.png").stat().st_size > 10_000
    with pytest.raises(SystemExit, match="exists; pass another -out folder, or -overwrite"):
        bench_cli.main(["step", "-sets", "cnn", "-rows", "adam", *fast])
    (out / "step.md").unlink()
    (out / "scaling.png").unlink()
    bench_cli.main(["report", "-out", str(out)])  # rebuilt from the JSON alone
    assert (out / "step.md").read_text() == step_md and (out / "scaling.png").exists()


def test_bad_flags_name_the_choices():
    with pytest.raises(SystemExit, match="-rows 'adam,adamm': choose from sgd"):
        bench_cli.main(["step", "-rows", "adam,adamm"])
    with pytest.raises(SystemExit, match="-sets 'resnet': choose from cnn, resnet18, single64m"):
        bench_cli.main(["step", "-sets", "resnet"])
    with pytest.raises(SystemExit, match="holds no step.json"):
        bench_cli.main(["report", "-out", "/nonexistent/folder"])


def test_training_throughput_table(monkeypatch, data_dir):
    """Both scripts and both textbook loops on the tiny MNIST (64 images, batches of 8), and the
    table built from them."""
    monkeypatch.setattr(throughput, "CONFIGS", (("mnist", None),))
    monkeypatch.setattr(throughput, "BATCH_SIZE", 8)
    results = throughput.run_all(data_dir, bench_cli.backend_modules(["torch", "jax"]))
    assert [r["backend"] for r in results] == ["torch", "jax"]
    for r in results:
        assert r["num_train"] == 64 and r["script"] > 0 and r["textbook"] > 0 and r["matmul_gflops"] > 0
        assert r["flops_per_sample"] == results[0]["flops_per_sample"]
    # forward and backward of the MLP take about 6 FLOPs per weight and sample
    assert 5.5 < results[0]["flops_per_sample"] / 1_336_610 < 7
    table = throughput.markdown({"machine": {"date": "d", "cpu": "c", "cores": 2}, "results": results})
    assert table.count("| mnist_mlp (64) |") == 2


def test_a_peer_that_cannot_step_is_reported_as_failing(tmp_path, monkeypatch):
    """torch-optimizer's Adafactor raises on a 4-D conv kernel: the run goes on, its record says why,
    and the tables compare ours with the peers that ran."""
    if torch_bench.load("torch_optimizer.Adafactor") is None:
        pytest.skip("torch-optimizer is not installed")
    monkeypatch.setattr(benchmarks, "TRIAD_ELEMENTS", 4096)
    monkeypatch.setitem(benchmarks.PARAM_SETS, "cnn", lambda: [(8, 3, 5, 5), (8,)])
    out = tmp_path / "bench"
    bench_cli.main(["step", "-sets", "cnn", "-rows", "adafactor", "-budget_s", "0", "-out", str(out)])
    results = json.loads((out / "step.json").read_text())["results"]
    failed = [r for r in results if r["time_s"] is None]
    assert [(r["backend"], r["impl"]) for r in failed] == [("torch", "torch-optimizer")]
    assert failed[0]["error"].startswith("RuntimeError: The size of tensor a") and failed[0]["ratio"] is None
    ran = [r for r in results if r["row"] == "adafactor" and r["time_s"] is not None]
    assert all(r["time_s"] > 0 for r in ran) and any(r["impl"] == "torch.optim per-tensor" for r in ran)
    step_md = (out / "step.md").read_text()
    assert "| torch-optimizer | fails: RuntimeError: The size of tensor a" in step_md.replace("peer: ", "")
