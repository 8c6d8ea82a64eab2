"""The comparison's plots, drawn from its records (``twinopt.comparison``): training curves and
learning-rate sensitivity, one PNG each per dataset.

matplotlib is imported inside the functions and drawn through a bare ``Figure`` (Agg, no
pyplot): no display is needed and the user's backend is left alone; nothing here imports JAX or
torch. Every row shares a panel, so each gets its own colour and line style (:func:`style`): the
ten tab10 colours solid, then the Dark2 and Set1 colours dashed, then dotted (up to 30 rows).
"""

from __future__ import annotations

import warnings

import numpy as np

from .registry import ROWS

LINESTYLES = ("-", "--", ":")


def style(row: str) -> dict:
    """The colour and line style of a row, the same in every plot."""
    from matplotlib import colormaps

    i = ROWS.index(row)
    colours = colormaps["tab10"].colors + colormaps["Dark2"].colors + colormaps["Set1"].colors
    return {"color": colours[i], "linestyle": LINESTYLES[i // 10]}


def _figure(width, height):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _series(records, key):
    """``(epochs, values)``: one row of values per seed; null (a diverged run) becomes NaN (the
    statistics below skip it; an epoch where every seed diverged has no point)."""
    epochs = [e["epoch"] for e in records[0]["epochs"]]
    values = np.array([[np.nan if e[key] is None else e[key] for e in r["epochs"]] for r in records], float)
    return epochs, values


def curves(path, title, final_runs: dict):
    """Training loss (log scale) and test accuracy against epochs, one line per row: the mean over
    its seeds with a band from the smallest to the largest seed's value."""
    fig = _figure(13, 5)
    panels = fig.subplots(1, 2)
    from matplotlib.ticker import MaxNLocator

    for ax, key, label, scale in ((panels[0], "train_loss", "training loss", 1),
                                  (panels[1], "test_acc", "test accuracy (%)", 100)):
        for row, records in final_runs.items():
            epochs, values = _series(records, key)
            values = values * scale
            line_style = style(row)
            with warnings.catch_warnings():  # all-NaN epochs: "Mean of empty slice"
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, low, high = (f(values, axis=0) for f in (np.nanmean, np.nanmin, np.nanmax))
            ax.plot(epochs, mean, label=row, linewidth=1.5, **line_style)
            if len(records) > 1:
                ax.fill_between(epochs, low, high, color=line_style["color"], alpha=0.15, linewidth=0)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    panels[0].set_yscale("log")
    seeds = max((len(r) for r in final_runs.values()), default=0)
    fig.suptitle(f"{title}: mean over {seeds} seeds, band min to max")
    fig.legend(*panels[0].get_legend_handles_labels(), loc="outside right center", fontsize="small")
    fig.savefig(path)


def lr_sensitivity(path, title, tuning: dict):
    """Final validation error (100 - accuracy, %) of each tune run against its learning rate, one
    line per row; the chosen learning rate is the filled marker. Both axes are logarithmic: on a
    linear accuracy axis a diverged run at chance squeezes the good runs, 1% apart, into one line."""
    fig = _figure(10, 5.5)
    ax = fig.subplots()
    for row, (records, chosen) in tuning.items():
        lrs = [r["lr"] for r in records]
        errors = [100 * (1 - r["epochs"][-1]["val_acc"]) for r in records]
        line_style = style(row)
        ax.plot(lrs, errors, marker="o", markersize=3, markerfacecolor="none", label=row, **line_style)
        ax.plot([chosen], [errors[lrs.index(chosen)]], marker="o", color=line_style["color"], markersize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("final validation error (%), log scale")
    ax.grid(alpha=0.3, which="both")
    ax.set_title(f"{title}: learning-rate sensitivity (filled: chosen)")
    fig.legend(loc="outside right center", fontsize="small")
    fig.savefig(path)
