"""Optimizer trajectories on the 2-D Rosenbrock and Rastrigin functions: the functions, the
choice of the tuned learning rate, the saved file and the plots.

Backend-neutral (NumPy only): the test functions take the array module ``xp`` (numpy,
jax.numpy, torch), so one definition gives the contours here and the gradients in a backend;
``jax_train/surfaces.py`` runs the optimizers. The plots are rebuilt from the saved file alone
(:func:`plot_from_file`), without JAX. matplotlib is imported only to plot, and drawn through
its Agg canvas (a ``Figure`` without pyplot): no display, no change of the user's backend.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .registry import LOOKAHEAD_ALPHA, LOOKAHEAD_K, ROWS

# One row per optimizer key, plus Lookahead around two of them; each with its defaults but lr.
LOOKAHEAD = {"sync_period": LOOKAHEAD_K, "slow_step_size": LOOKAHEAD_ALPHA}
# The grid each row's learning rate is tuned on: 8 a decade from 1e-5 to 100 (AdaDelta's
# useful learning rates are near 1-100, SGD's on Rosenbrock near 1e-3).
LEARNING_RATES = tuple(float(lr) for lr in np.logspace(-5, 2, 57))
FILE = "trajectories.json"


def rosenbrock(x, y, xp=np):
    """``(1 - x)^2 + 100 (y - x^2)^2``: a narrow curved valley, minimum 0 at (1, 1)."""
    del xp  # polynomial: no function of the array module needed
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def rastrigin(x, y, xp=np):
    """``20 + sum_v (v^2 - 10 cos(2 pi v))``: a bowl under a grid of local minima, minimum 0 at (0, 0)."""
    return 20 + x**2 - 10 * xp.cos(2 * math.pi * x) + y**2 - 10 * xp.cos(2 * math.pi * y)


class Surface(NamedTuple):
    fn: Callable  # fn(x, y, xp)
    start: tuple[float, float]
    minimum: tuple[float, float]
    xlim: tuple[float, float]  # the plotted box, also the domain a run must stay in
    ylim: tuple[float, float]
    log_contours: bool  # Rosenbrock's values span 1e-1..1e3: only log levels show the valley


SURFACES = {
    "rosenbrock": Surface(rosenbrock, (-1.5, 2.0), (1.0, 1.0), (-2.0, 2.0), (-1.0, 3.0), True),
    "rastrigin": Surface(rastrigin, (-2.0, 3.5), (0.0, 0.0), (-4.5, 4.5), (-4.5, 4.5), False),
}


def settings(steps: int, learning_rates=LEARNING_RATES, rows=ROWS) -> dict:
    """Everything a saved run depends on, as it reads back from JSON (lists, not tuples)."""
    return json.loads(json.dumps({
        "steps": steps, "dtype": "float64", "rows": list(rows), "learning_rates": list(learning_rates),
        "lookahead": LOOKAHEAD,
        "surfaces": {name: {"start": s.start, "minimum": s.minimum, "xlim": s.xlim, "ylim": s.ylim}
                     for name, s in SURFACES.items()},
    }))


def final_values(paths, surface: Surface) -> np.ndarray:
    """The function value at the last iterate of each run (``paths``: runs x iterates x 2), NaN
    for a run that diverged: one with a non-finite iterate or one that left the plotted box
    (it cannot be drawn, and landing near the minimum after flying off is luck, not tuning)."""
    paths = np.asarray(paths, dtype=np.float64)
    x, y = paths[..., 0], paths[..., 1]
    inside = (surface.xlim[0] <= x) & (x <= surface.xlim[1]) & (surface.ylim[0] <= y) & (y <= surface.ylim[1])
    with np.errstate(invalid="ignore", over="ignore"):  # NaN comparisons are False: NaN runs are outside
        values = surface.fn(x[:, -1], y[:, -1], np)
    return np.where(inside.all(axis=-1), values, np.nan)


def tune(name: str, row: str, learning_rates, paths) -> dict:
    """The tuned run of ``row`` on surface ``name``: the learning rate whose run ends at the
    smallest function value, among the runs that did not diverge (see :func:`final_values`).
    Final values within 1e-9 (relative) of the smallest are ties, runs that converged to the
    same minimum and differ by rounding: among them the run of smallest mean value over its
    iterates wins, the one that got there first. The final values of all runs are kept (null:
    diverged), so the choice can be checked from the saved file."""
    surface = SURFACES[name]
    paths = np.asarray(paths, dtype=np.float64)
    values = final_values(paths, surface)
    if np.isnan(values).all():
        raise ValueError(f"{row} on {name}: every learning rate diverged")
    best = np.nanmin(values)
    with np.errstate(invalid="ignore", over="ignore"):
        tied = values <= best + 1e-9 * abs(best)  # False for NaN
        mean_values = surface.fn(paths[..., 0], paths[..., 1], np).mean(axis=-1)
    chosen = int(np.argmin(np.where(tied, mean_values, np.inf)))
    path = paths[chosen]
    return {
        "lr": float(learning_rates[chosen]),
        "value": float(values[chosen]),
        "distance": float(np.hypot(*(path[-1] - surface.minimum))),
        "final_values": [None if np.isnan(v) else float(v) for v in values],
        "path": path.tolist(),
    }


def saved_run(out_dir, expected: dict) -> dict | None:
    """The run saved in ``out_dir`` if it was made with the ``expected`` settings, None if
    ``out_dir`` holds no outputs. Outputs of other settings, or plots without their file, are
    never overwritten: SystemExit naming the fix."""
    out_dir = Path(out_dir)
    file = out_dir / FILE
    if file.exists():
        saved = json.loads(file.read_text())
        differ = sorted(k for k in expected if saved["settings"].get(k) != expected[k])
        if not differ:
            return saved
        raise SystemExit(f"error: {file} holds a run with other settings ({', '.join(differ)} differ); "
                         "choose another -out or delete it (nothing was changed).")
    plots = [out_dir / f"{name}.png" for name in SURFACES if (out_dir / f"{name}.png").exists()]
    if plots:
        raise SystemExit(f"error: {out_dir} holds {', '.join(map(str, plots))} without the {FILE} they were "
                         "made from; choose another -out or delete them (nothing was changed).")
    return None


def save(data: dict, out_dir) -> Path:
    """Write ``{"settings": ..., "results": {surface: {row: tune(...)}}}`` as ``out_dir/trajectories.json``."""
    file = Path(out_dir) / FILE
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(data))
    return file


def plot(name: str, results: dict, steps: int, png) -> None:
    """One PNG for surface ``name``: a small panel per row (``results``: row -> :func:`tune`'s
    dict) with the contours, the tuned path, the start (black dot) and the minimum (star)."""
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    surface = SURFACES[name]
    grid_x, grid_y = np.meshgrid(np.linspace(*surface.xlim, 400), np.linspace(*surface.ylim, 400))
    z = surface.fn(grid_x, grid_y, np)
    if surface.log_contours:
        contour = {"levels": np.logspace(-1, 3.5, 19), "norm": LogNorm(), "extend": "min"}
    else:
        contour = {"levels": np.linspace(0, z.max(), 11)}
    ncols = 6
    nrows = math.ceil(len(results) / ncols)
    fig = Figure(figsize=(2.9 * ncols, 3.1 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, (row, run) in zip(axes.flat, results.items()):
        ax.contourf(grid_x, grid_y, z, cmap="Blues_r", alpha=0.6, **contour)
        ax.contour(grid_x, grid_y, z, colors="gray", linewidths=0.3, **contour)
        path = np.asarray(run["path"])
        ax.plot(path[:, 0], path[:, 1], color="crimson", lw=1.0)
        ax.plot(*path[-1], "o", color="crimson", ms=3)
        ax.plot(*surface.start, "o", color="black", ms=5)
        ax.plot(*surface.minimum, "*", color="gold", mec="black", mew=0.5, ms=12)
        ax.set(xlim=surface.xlim, ylim=surface.ylim, xticks=[], yticks=[], aspect="equal")
        ax.set_title(f"{row}\nlr {run['lr']:.3g}   f {run['value']:.2g}   dist {run['distance']:.2g}", fontsize=9)
    for ax in axes.flat[len(results):]:
        ax.axis("off")
    fig.suptitle(f"{name}: {steps} steps from the black dot to the star; each learning rate tuned for the "
                 "smallest final f (dist: to the minimum)", fontsize=11)
    fig.savefig(png, dpi=100)


def plot_from_file(file, out_dir) -> list[Path]:
    """Draw ``<surface>.png`` into ``out_dir`` for each surface in a saved trajectories file."""
    data = json.loads(Path(file).read_text())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = []
    for name, results in data["results"].items():
        pngs.append(out_dir / f"{name}.png")
        plot(name, results, data["settings"]["steps"], pngs[-1])
    return pngs


def table(data: dict) -> str:
    """The tuned learning rate and final value of every row on every surface, as text."""
    names = list(data["results"])
    lines = ["row".ljust(20) + "".join(f"{n + ' lr':>16}{n + ' f':>16}" for n in names)]
    for row in data["settings"]["rows"]:
        runs = [data["results"][n][row] for n in names]
        lines.append(row.ljust(20) + "".join(f"{r['lr']:>16.3g}{r['value']:>16.3g}" for r in runs))
    return "\n".join(lines)
