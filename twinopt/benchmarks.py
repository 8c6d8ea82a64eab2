"""The backend-neutral half of the benchmarks (``bench.py``): parameter sets, the bytes an
optimizer step must move, timing, result files, tables and the scaling plot.

An optimizer step is elementwise, so its speed limit is memory bandwidth: the minimum traffic
is reading params, gradients and every state array once and writing params and state once.
Achieved bandwidth (that traffic / measured time) is compared with a triad ``a = b + s * c`` on
arrays far larger than the caches, measured in the same run. Below a few million parameters the
time is set by per-tensor dispatch instead, which the scaling plot shows.

This module imports NumPy only (matplotlib inside :func:`plot_scaling`).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path

from twinopt.models import param_shapes
from twinopt.registry import INFO, LOOKAHEAD_K, split_row

TRIAD_ELEMENTS = 64 * 2**20  # 3 arrays of 256 MiB (float32): far beyond any cache


def resnet18_shapes() -> list[tuple[int, ...]]:
    """The 62 parameter tensors of torchvision's ResNet-18 (11,689,512 parameters): conv weights,
    batch-norm scales and shifts, and the 1000-way classifier."""
    shapes = [(64, 3, 7, 7), (64,), (64,)]
    in_channels = 64
    for stage, channels in enumerate((64, 128, 256, 512)):
        for block in range(2):
            block_in = in_channels if block == 0 else channels
            shapes += [(channels, block_in, 3, 3), (channels,), (channels,),
                       (channels, channels, 3, 3), (channels,), (channels,)]
            if block == 0 and stage > 0:  # the downsampling shortcut
                shapes += [(channels, in_channels, 1, 1), (channels,), (channels,)]
        in_channels = channels
    return shapes + [(1000, 512), (1000,)]


PARAM_SETS = {
    "cnn": lambda: list(param_shapes("cifar10_3c3d").values()),
    "resnet18": resnet18_shapes,
    "single64m": lambda: [(64 * 2**20,)],
}


def scaled_shapes(total: int) -> list[tuple[int, ...]]:
    """ResNet-18's 62 tensors, each resized (flat) in proportion so that they hold about ``total``
    parameters: the scaling plot keeps the tensor count fixed while the size varies."""
    base = [math.prod(s) for s in resnet18_shapes()]
    scale = total / sum(base)
    return [(max(1, round(n * scale)),) for n in base]


def numel(shapes) -> int:
    return sum(math.prod(s) for s in shapes)


def min_bytes(row: str, num_params: int, itemsize: int = 4) -> float:
    """Bytes a step of ``row`` must move at least: read params, gradients and state, write params
    and state; Lookahead reads and writes its slow copy once every k steps."""
    key, lookahead = split_row(row)
    arrays = 3 + 2 * INFO[key].state_arrays + (2 / LOOKAHEAD_K if lookahead else 0)
    return arrays * num_params * itemsize


def median_time(step, warmup=3, min_steps=5, max_steps=200, budget_s=2.0) -> float:
    """Median seconds of ``step()`` (which must wait for its own result) over at least
    ``min_steps`` calls after ``warmup`` ones, more while the time budget lasts."""
    for _ in range(warmup):
        step()
    times, start = [], time.perf_counter()
    while len(times) < min_steps or (len(times) < max_steps and time.perf_counter() - start < budget_s):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def runnable(steps: dict) -> tuple[dict, dict]:
    """``steps`` split by one call each into those that run and ``{name: "ErrorType: message"}`` for
    those that raise: a peer that cannot step on a param set (torch-optimizer's Adafactor on conv
    kernels) is reported as failing there instead of ending the whole run."""
    ok, errors = {}, {}
    for name, step in steps.items():
        try:
            step()
        except Exception as e:  # any failure of a third-party step is a result to report
            errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        else:
            ok[name] = step
    return ok, errors


def interleaved_medians(steps: dict, warmup=2, min_rounds=5, max_rounds=200, budget_s=2.0) -> dict:
    """Median seconds per call of every ``steps[name]()`` (each waits for its own result), called
    in turn, round after round: a slow phase of the machine (another VM on the memory bus) then
    hits every implementation alike, and each one's step finds the caches full of the others'
    arrays, as after a forward and backward pass. At least ``min_rounds`` rounds, more while
    ``budget_s`` per implementation lasts."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times = {name: [] for name in steps}
    start, rounds = time.perf_counter(), 0
    while rounds < min_rounds or (rounds < max_rounds and time.perf_counter() - start < budget_s * len(steps)):
        for name, step in steps.items():
            t = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t)
        rounds += 1
    return {name: statistics.median(t) for name, t in times.items()}


def triad_bytes(n: int, itemsize: int = 4) -> int:
    """Read b and c, write a (the STREAM convention: the write-allocate read is not counted)."""
    return 3 * n * itemsize


def new_output(path: Path, overwrite: bool) -> Path:
    """``path``, refusing to replace a result file unless told to (results are never lost)."""
    if path.exists() and not overwrite:
        raise SystemExit(f"error: {path} exists; pass another -out folder, or -overwrite to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_json(path: Path, payload: dict, overwrite: bool) -> None:
    new_output(path, overwrite).write_text(json.dumps(payload, indent=1) + "\n")


def add_ratios(results: list[dict]) -> list[dict]:
    """Per (set, backend, row): each result's time over the fastest peer's (``None`` where the row
    has no peer), and its bandwidth as a fraction of the run's best triad."""
    triad = max(r["gbps"] for r in results if r["row"] == "triad")
    best_peer = {}
    for r in results:
        if r["kind"] == "peer" and r["time_s"] is not None:
            group = (r["set"], r["backend"], r["row"])
            best_peer[group] = min(best_peer.get(group, math.inf), r["time_s"])
    for r in results:
        if r["row"] != "triad":
            peer = best_peer.get((r["set"], r["backend"], r["row"]))
            r["ratio"] = r["time_s"] / peer if peer and r["time_s"] is not None else None
            r["triad_fraction"] = r["gbps"] / triad if r["gbps"] is not None else None
    return results


def _fmt_ms(seconds):
    return f"{seconds * 1e3:.3g}" if seconds < 1 else f"{seconds * 1e3:.0f}"


def step_summary(results: list[dict], param_set: str) -> str:
    """One Markdown table per parameter set: per row and backend, our fastest path, the fastest
    peer, the ratio of their times and our achieved bandwidth as % of the triad."""
    lines = ["| optimizer | torch: ours (path) ms | fastest peer ms | ratio | % triad "
             "| JAX: ours ms | optax ms | ratio | % triad |", "|---|---|---|---|---|---|---|---|---|"]
    for row in dict.fromkeys(r["row"] for r in results if r["set"] == param_set):
        cells = [row]
        for backend in ("torch", "jax"):
            here = [r for r in results if (r["set"], r["backend"], r["row"]) == (param_set, backend, row)
                    and r["time_s"] is not None]
            mine = [r for r in here if r["kind"] == "ours"]
            peers = [r for r in here if r["kind"] == "peer"]
            if not mine:
                cells += ["", "", "", ""]
                continue
            best = min(mine, key=lambda r: r["time_s"])
            peer = min(peers, key=lambda r: r["time_s"]) if peers else None
            path = f" ({best['impl']})" if backend == "torch" else ""
            cells += [f"{_fmt_ms(best['time_s'])}{path}",
                      f"{_fmt_ms(peer['time_s'])} ({peer['impl']})" if peer else "no peer",
                      f"{best['ratio']:.2f}" if best["ratio"] else "-", f"{100 * best['triad_fraction']:.0f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def step_detail(results: list[dict]) -> str:
    """Every measurement: set, backend, row, implementation, ms, ratio to the fastest peer, GB/s."""
    lines = ["| set | backend | optimizer | implementation | ms/step | ratio to fastest peer | GB/s | % triad |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r["row"] == "triad":
            lines.append(f"| - | {r['backend']} | triad | a = b + s*c, {r['num_params']:,} x float32 "
                         f"| {_fmt_ms(r['time_s'])} | | {r['gbps']:.1f} | |")
            continue
        if r["time_s"] is None:
            lines.append(f"| {r['set']} | {r['backend']} | {r['row']} | {r['kind']}: {r['impl']} "
                         f"| fails: {r['error']} | - | - | - |")
            continue
        ratio = f"{r['ratio']:.2f}" if r["ratio"] else "-"
        lines.append(f"| {r['set']} | {r['backend']} | {r['row']} | {r['kind']}: {r['impl']} | {_fmt_ms(r['time_s'])} "
                     f"| {ratio} | {r['gbps']:.1f} | {100 * r['triad_fraction']:.0f}% |")
    return "\n".join(lines)


def plot_scaling(results: list[dict], path: Path, title: str) -> None:
    """Step time against parameter count, one line per (backend, implementation), one panel per row."""
    from matplotlib.figure import Figure  # a bare Figure: no display, the user's backend untouched

    rows = list(dict.fromkeys(r["row"] for r in results))
    fig = Figure(figsize=(6 * len(rows), 5))
    for i, row in enumerate(rows):
        ax = fig.add_subplot(1, len(rows), i + 1)
        lines = {}
        for r in results:
            if r["row"] == row and r["time_s"] is not None:
                lines.setdefault((r["backend"], r["kind"], r["impl"]), []).append((r["num_params"], r["time_s"]))
        for (backend, kind, impl), points in sorted(lines.items()):
            x, y = zip(*sorted(points))
            ax.plot(x, [t * 1e3 for t in y], marker="o", linestyle="-" if kind == "ours" else "--",
                    label=f"{backend} {kind}: {impl}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters (62 tensors)")
        ax.set_ylabel("ms per step")
        ax.set_title(row)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# The conv of the throughput table: the 3c3d CNN's second layer on a batch of 128 (64 -> 96
# channels, 3x3 VALID on the 14x14 map the first conv and pool leave).
CONV = {"batch": 128, "in_channels": 64, "size": 14, "out_channels": 96, "kernel": 3}


def conv_flops() -> int:
    c = CONV
    out = c["size"] - c["kernel"] + 1
    return 2 * c["batch"] * out * out * c["out_channels"] * c["in_channels"] * c["kernel"] ** 2


def timed_loop(batches, step, warmup=5, budget_s=15.0, max_steps=300):
    """Samples/s of ``step(x, y)`` (which must wait for its result) over ``batches``, after
    ``warmup`` steps, until the time budget or ``max_steps`` is spent."""
    seen, start = 0, None
    for i, (x, y) in enumerate(batches):
        if i == warmup:
            seen, start = 0, time.perf_counter()
        step(x, y)
        seen += len(y)
        if start is not None and (time.perf_counter() - start > budget_s or i - warmup + 1 >= max_steps):
            break
    if start is None:
        raise ValueError(f"the data holds {i + 1} batches, fewer than the {warmup} warm-up steps")
    return seen / (time.perf_counter() - start)
