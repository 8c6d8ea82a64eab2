"""Benchmarks: optimizer steps against every peer, their scaling, and training throughput.

    python bench.py step                  # every optimizer, 3 param sets, both backends
    python bench.py scaling               # step time against parameter count (1e4 to 1e8), a plot
    python bench.py train -data_dir ../shared/data
    python bench.py report                # rebuild the Markdown tables and the plot from the JSON

Each command writes JSON and Markdown under ``-out`` (default ``benchmarks/``) and prints the
tables; existing result files are kept unless ``-overwrite``. Times are medians of many steps
after warm-up, all float32; ratios compare implementations measured side by side in one run.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import sys
import time
from pathlib import Path

from twinopt import benchmarks, cli
from twinopt.registry import ROWS

STEP_SETS = tuple(benchmarks.PARAM_SETS)
SCALING_SIZES = (10**4, 10**5, 10**6, 10**7, 10**8)
SCALING_ROWS = ("adam", "adabound", "aggmo")


def parse_args(argv):
    p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("step", "scaling", "train", "report"))
    p.add_argument("-out", default="benchmarks", help="folder of the result files")
    p.add_argument("-overwrite", action="store_true", help="replace result files of an earlier run")
    p.add_argument("-sets", default=",".join(STEP_SETS), help=f"step: param sets, of {', '.join(STEP_SETS)}")
    p.add_argument("-rows", default=None, help="step/scaling: optimizer rows, comma-separated (default: all / "
                   f"{', '.join(SCALING_ROWS)}), of {', '.join(ROWS)}")
    p.add_argument("-backends", default="torch,jax", help="torch, jax or both")
    p.add_argument("-budget_s", type=float, default=1.0,
                   help="seconds of timed steps per implementation (at least 5 rounds)")
    p.add_argument("-data_dir", default=None, help="train: folder of mnist.npz / cifar10.npz (default: offline MNIST)")
    args = p.parse_args(argv)
    args.sets = _choices("-sets", args.sets, STEP_SETS)
    args.backends = _choices("-backends", args.backends, ("torch", "jax"))
    args.rows = _choices("-rows", args.rows, ROWS) if args.rows else None
    return args


def _choices(flag, value, allowed):
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in chosen if v not in allowed]
    if bad or not chosen:
        raise SystemExit(f"error: {flag} {value!r}: choose from {', '.join(allowed)}")
    return chosen


def backend_modules(backends) -> dict:
    """The backends' benchmark modules, imported only when asked for: a JAX-only or a torch-only
    install benchmarks its own backend."""
    mods = {}
    if "torch" in backends:
        from torch_train import benchmarks as torch_benchmarks
        mods["torch"] = torch_benchmarks
    if "jax" in backends:
        from jax_train import benchmarks as jax_benchmarks
        mods["jax"] = jax_benchmarks
    return mods


def machine():
    import numpy as np

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("torch", "jax", "optax", "torch-optimizer", "pytorch_optimizer"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {"date": datetime.date.today().isoformat(), "cpu": cpu, "cores": os.cpu_count(), "versions": versions}


def triads(mods, budget_s):
    out = []
    for backend, mod in mods.items():
        n = benchmarks.TRIAD_ELEMENTS
        t = mod.triad_seconds(n, budget_s)
        out.append({"set": "-", "backend": backend, "row": "triad", "kind": "machine", "impl": "a = b + s*c",
                    "num_params": n, "time_s": t, "gbps": benchmarks.triad_bytes(n) / t / 1e9})
        print(f"{backend} triad: {out[-1]['gbps']:.1f} GB/s", flush=True)
    return out


def measure(mods, rows, sets_and_shapes, budget_s):
    """Every implementation of every row on every param set, as result records."""
    results = []
    for set_name, shapes in sets_and_shapes:
        n = benchmarks.numel(shapes)
        for row in rows:
            for backend, mod in mods.items():
                for kind, impl, seconds, error in mod.time_row(row, shapes, budget_s=budget_s):
                    results.append({"set": set_name, "num_params": n, "num_tensors": len(shapes), "backend": backend,
                                    "row": row, "kind": kind, "impl": impl, "time_s": seconds, "error": error,
                                    "gbps": None if error else benchmarks.min_bytes(row, n) / seconds / 1e9})
                    timing = f"fails: {error}" if error else (f"{seconds * 1e3:9.3f} ms "
                                                                f"{results[-1]['gbps']:6.1f} GB/s")
                    print(f"{set_name:>10} {backend:>5} {row:>18} {kind:>4} {impl:<48} {timing}", flush=True)
    return results


def step_markdown(payload):
    results = payload["results"]
    parts = [f"Measured {payload['machine']['date']} on {payload['machine']['cpu']} "
             f"({payload['machine']['cores']} cores), float32; `python bench.py step`."]
    triad = {r["backend"]: r["gbps"] for r in results if r["row"] == "triad"}
    parts.append("Triad (a = b + s*c, 3 x 256 MiB): " + ", ".join(f"{b} {g:.1f} GB/s" for b, g in triad.items()))
    for set_name in dict.fromkeys(r["set"] for r in results if r["row"] != "triad"):
        first = next(r for r in results if r["set"] == set_name)
        parts.append(f"### {set_name}: {first['num_params']:,} parameters in {first['num_tensors']} tensors\n\n"
                     + benchmarks.step_summary(results, set_name))
    parts.append("### Every measurement\n\n" + benchmarks.step_detail(results))
    return "\n\n".join(parts) + "\n"


def cmd_step(args):
    json_path = benchmarks.new_output(Path(args.out) / "step.json", args.overwrite)
    mods = backend_modules(args.backends)
    results = triads(mods, args.budget_s)
    results += measure(mods, args.rows or ROWS, [(s, benchmarks.PARAM_SETS[s]()) for s in args.sets], args.budget_s)
    payload = {"machine": machine(), "results": benchmarks.add_ratios(results)}
    benchmarks.write_json(json_path, payload, True)
    write_report(args.out, "step", step_markdown(payload))


def cmd_scaling(args):
    json_path = benchmarks.new_output(Path(args.out) / "scaling.json", args.overwrite)
    mods = backend_modules(args.backends)
    sets = [(f"{n:.0e}", benchmarks.scaled_shapes(n)) for n in SCALING_SIZES]
    results = measure(mods, args.rows or SCALING_ROWS, sets, args.budget_s)
    payload = {"machine": machine(), "results": results}
    benchmarks.write_json(json_path, payload, True)
    plot(args.out, payload)


def plot(out, payload):
    path = Path(out) / "scaling.png"
    m = payload["machine"]
    benchmarks.plot_scaling(payload["results"], path, f"optimizer step time, float32, {m['cpu']} ({m['cores']} cores), "
                                                 f"{m['date']}")
    print(f"wrote {path}")


def write_report(out, name, markdown):
    path = Path(out) / f"{name}.md"
    path.write_text(markdown)
    print(markdown)
    print(f"wrote {path} and {path.with_suffix('.json')}")


def cmd_train(args):
    from twinopt import throughput

    json_path = benchmarks.new_output(Path(args.out) / "train.json", args.overwrite)
    payload = {"machine": machine(), "results": throughput.run_all(args.data_dir, backend_modules(args.backends))}
    benchmarks.write_json(json_path, payload, True)
    write_report(args.out, "train", throughput.markdown(payload))


def cmd_report(args):
    """Rebuild the Markdown and the plot from the JSON files alone (no measuring)."""
    out = Path(args.out)
    found = False
    if (out / "step.json").exists():
        write_report(out, "step", step_markdown(json.loads((out / "step.json").read_text())))
        found = True
    if (out / "scaling.json").exists():
        plot(out, json.loads((out / "scaling.json").read_text()))
        found = True
    if (out / "train.json").exists():
        from twinopt import throughput

        write_report(out, "train", throughput.markdown(json.loads((out / "train.json").read_text())))
        found = True
    if not found:
        raise SystemExit(f"error: {out} holds no step.json, scaling.json or train.json; run a benchmark first.")


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    {"step": cmd_step, "scaling": cmd_scaling, "train": cmd_train, "report": cmd_report}[args.command](args)
    print(f"done in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
