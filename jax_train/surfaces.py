"""Every jax_opt optimizer on the 2-D Rosenbrock and Rastrigin functions, its learning rate
tuned on a log grid; writes the trajectories and one plot per function.

    python -m jax_train.surfaces -out results/surfaces [-steps 500]

All learning rates of one optimizer run at once: ``jax.vmap`` over the learning rate of a
``lax.scan`` over the steps, compiled once. The learning rate reaches the optimizer through
``optax.inject_hyperparams`` as a traced array, and only it: the factory wrapped has the single
argument ``learning_rate``. ``inject_hyperparams(jax_opt.sgd)`` would inject every numeric
default too; that runs (the same trajectories to rounding), but turns constants into arrays,
which keeps branches a constant skips (a ``0 * p`` weight-decay term), and the hyperparameter
checks skip what is not a plain number, so even ``learning_rate=-1.0`` would pass. The injected learning rate is not checked either: each is
checked by building the optimizer once with the plain float, before tracing.
Runs are in float64, so that converging runs are not stopped by float32 rounding.
The functions, the tuning rule, the file and the plots are in ``twinopt.surfaces``.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jax_opt
from twinopt import cli, surfaces
from twinopt.registry import split_row


def optimizer(row: str, learning_rate) -> optax.GradientTransformation:
    """The optimizer of a row of ``surfaces.ROWS``: a jax_opt key with its defaults but the
    learning rate, ``key+lookahead`` wrapped in Lookahead."""
    key, lookahead = split_row(row)
    tx = jax_opt.OPTIMIZERS[key](learning_rate=learning_rate)
    return jax_opt.lookahead(tx, **surfaces.LOOKAHEAD) if lookahead else tx


def trajectories(row: str, name: str, learning_rates, steps: int) -> np.ndarray:
    """The iterates (learning rates x steps + 1 x 2, the start first) of ``row`` on surface ``name``."""
    for lr in learning_rates:
        optimizer(row, float(lr))  # ValueError for a bad learning rate (the traced one is not checked)
    surface = surfaces.SURFACES[name]
    grad = jax.grad(lambda p: surface.fn(p[0], p[1], jnp))
    injected = optax.inject_hyperparams(functools.partial(optimizer, row))

    def run(lr):
        tx = injected(learning_rate=lr)

        def step(carry, _):
            params, state = carry
            updates, state = tx.update(grad(params), state, params)
            params = optax.apply_updates(params, updates)
            return (params, state), params

        start = jnp.asarray(surface.start)
        _, path = jax.lax.scan(step, (start, tx.init(start)), length=steps)
        return jnp.concatenate([start[None], path])

    with jax.enable_x64(True):
        return np.asarray(jax.jit(jax.vmap(run))(jnp.asarray(learning_rates, jnp.float64)))


def run_all(steps: int, learning_rates=surfaces.LEARNING_RATES, rows=surfaces.ROWS) -> dict:
    """Every row on every surface, tuned (``twinopt.surfaces.tune``): the data of ``trajectories.json``."""
    results = {name: {row: surfaces.tune(name, row, learning_rates, trajectories(row, name, learning_rates, steps))
                      for row in rows}
               for name in surfaces.SURFACES}
    return {"settings": surfaces.settings(steps, learning_rates, rows), "results": results}


def main(argv=None) -> None:
    parser = cli.ArgumentParser(
        prog="python -m jax_train.surfaces",
        description="Run every optimizer on the 2-D Rosenbrock and Rastrigin functions, with the learning rate "
        "tuned per optimizer; write trajectories.json, rosenbrock.png and rastrigin.png. An -out folder that "
        "already holds a run of the same settings is only replotted.",
    )
    parser.add_argument("-steps", type=int, default=500, help="optimizer steps per run")
    parser.add_argument("-out", default="results/surfaces", help="output folder")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"-steps must be >= 1, got {args.steps}")
    file = Path(args.out) / surfaces.FILE
    data = surfaces.saved_run(args.out, surfaces.settings(args.steps))
    if data is None:
        began = time.perf_counter()
        data = run_all(args.steps)
        surfaces.save(data, args.out)
        print(f"ran {len(surfaces.ROWS)} optimizers x {len(surfaces.LEARNING_RATES)} learning rates on "
              f"{len(surfaces.SURFACES)} functions in {time.perf_counter() - began:.1f} s: wrote {file}")
    else:
        print(f"{file} already holds this run: only replotting")
    pngs = surfaces.plot_from_file(file, args.out)
    print(surfaces.table(data))
    print("wrote " + ", ".join(map(str, pngs)))


if __name__ == "__main__":
    main()
