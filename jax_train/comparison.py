"""The JAX engine of the comparison (``twinopt.comparison``): the runs of one row, one per (learning
rate, seed), trained together by one compiled program.

The G runs' params are stacked on a leading axis (shape ``(G, ...)``) and the whole train step
(forward, backward, optimizer update) is ``jax.vmap``-ed over it, jitted once with the params and
optimizer state donated; the evaluation is vmapped too, every run on the same batch. Each run gets
its own seed's initial weights and batches (``twinopt.comparison.group_batches``), so a run in a group
follows the trajectory it follows alone, and that ``train_jax.py -seed`` follows.

The learning rate is the one hyperparameter that differs between the runs: it reaches the optimizer
as a traced array through ``optax.inject_hyperparams`` and lives in the optimizer state. Only it is
injected (the factory wrapped takes ``learning_rate`` alone): injecting every numeric default, as
``inject_hyperparams(jax_opt.sgd)`` would, turns constants into arrays, which keeps branches a
constant skips (a ``0 * p`` weight-decay term) and the arithmetic would no longer be the one
the parity suite checks against torch. The factories' checks skip traced values; the grid's learning
rates are positive by construction (``twinopt.comparison.Protocol``).

A group is as large as fits: all the runs asked for, at most ``max_group``, made smaller while XLA's
memory estimate of the compiled programs exceeds ``memory_limit``; a group of one is a sequential run.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jax_opt
from jax_train.models import build_model
from twinopt.comparison import parse_row
from twinopt.models import INPUT_SHAPES
from twinopt.registry import INFO


@contextlib.contextmanager
def precision(dtype: str):
    """x64 as the protocol's dtype needs it (float64 also makes the step counts and schedules
    float64, as in train_jax.py), restored afterwards."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", dtype == "float64")
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


def optimizer(row: str, learning_rate, lookahead_k: int, lookahead_alpha: float) -> optax.GradientTransformation:
    """The row's optimizer with only the learning rate injected (a float or a traced array)."""
    key, lookahead = parse_row(row)
    factory = functools.partial(jax_opt.OPTIMIZERS[key], **INFO[key].flax_kwargs)
    tx = optax.inject_hyperparams(lambda learning_rate: factory(learning_rate=learning_rate))(learning_rate)
    return jax_opt.lookahead(tx, lookahead_k, lookahead_alpha) if lookahead else tx


def default_memory_limit() -> int:
    """Half the device's memory; on a CPU, half the machine's."""
    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return stats["bytes_limit"] // 2
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2


def _bytes(compiled) -> int:
    m = compiled.memory_analysis()
    return m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes


class _Program:
    """The compiled programs of one row for groups of ``size`` runs: the train step, the evaluation
    (compiled now for its memory estimate; the last, smaller batch compiles when it comes) and the init."""

    def __init__(self, problem, row: str, size: int):
        p = problem.protocol
        graphdef, params = nnx.split(build_model(problem.model, p.tune_seed, problem.dtype, **p.sizes))
        # The update reads the learning rate from the state (inject_hyperparams): this value is never used.
        tx = optimizer(row, 1.0, p.lookahead_k, p.lookahead_alpha)

        def loss_and_logits(params, x, y):
            logits = nnx.merge(graphdef, params)(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

        def train_step(params, state, x, y):
            (loss, logits), grads = jax.value_and_grad(loss_and_logits, has_aux=True)(params, x, y)
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state, loss, jnp.sum(jnp.argmax(logits, -1) == y)

        def eval_step(params, x, y):
            loss, logits = loss_and_logits(params, x, y)
            return loss * len(y), jnp.sum(jnp.argmax(logits, -1) == y)

        def spec(shape, dtype):
            return jax.ShapeDtypeStruct(shape, jax.dtypes.canonicalize_dtype(dtype))

        self.init = jax.jit(jax.vmap(lambda params, lr: optimizer(row, lr, p.lookahead_k, p.lookahead_alpha)
                                     .init(params)))
        stacked = jax.tree.map(lambda a: spec((size, *a.shape), a.dtype), params)
        state = jax.eval_shape(self.init, stacked, spec((size,), problem.dtype))
        image = INPUT_SHAPES[problem.model]
        start = time.perf_counter()
        self.train = jax.jit(jax.vmap(train_step), donate_argnums=(0, 1)).lower(
            stacked, state, spec((size, p.batch_size, *image), problem.dtype),
            spec((size, p.batch_size), np.int64)).compile()
        self.eval = jax.jit(jax.vmap(eval_step, in_axes=(0, None, None)))
        eval_bytes = _bytes(self.eval.lower(stacked, spec((problem.eval_batch_size, *image), problem.dtype),
                                            spec((problem.eval_batch_size,), np.int64)).compile())
        self.compile_s = time.perf_counter() - start
        self.bytes = max(_bytes(self.train), eval_bytes)


class VmapEngine:
    """Groups of up to ``max_group`` runs (None: all), as many as fit in ``memory_limit`` bytes."""

    backend = "jax"

    def __init__(self, problem, max_group=None, memory_limit=None):
        self.problem, self.max_group = problem, max_group
        self.memory_limit = memory_limit if memory_limit is not None else default_memory_limit()
        self._programs, self._fits = {}, {}  # (row, size) -> _Program; row -> largest group that fits

    def program(self, row: str, size: int) -> _Program:
        if (row, size) not in self._programs:
            self._programs[row, size] = _Program(self.problem, row, size)
        return self._programs[row, size]

    def start(self, row: str, combos) -> VmapGroup:
        size = min(len(combos), self.max_group or len(combos), self._fits.get(row, len(combos)))
        while size > 1 and (need := self.program(row, size).bytes) > self.memory_limit:
            # the estimate grows about linearly with the group: try the size that would fit, and
            # remember it for the row's next groups
            size = self._fits[row] = min(size - 1, max(1, size * self.memory_limit // need))
        return VmapGroup(self.problem, self.program(row, size), combos[:size])


class VmapGroup:
    """The runs of one group: stacked params and optimizer states, on the device."""

    def __init__(self, problem, program: _Program, combos):
        p = problem.protocol
        self.size, self.program = len(combos), program
        self.compile_s, program.compile_s = program.compile_s, 0.0  # counted by the first group that runs it
        self.engine = "vmap" if self.size > 1 else "sequential"
        runs = [nnx.split(build_model(problem.model, seed, problem.dtype, **p.sizes))[1] for _, seed in combos]
        # stacked in NumPy: jnp.stack would compile a program per leaf shape
        self.params = jax.device_put(jax.tree.map(lambda *a: np.stack(a), *runs))
        self.state = program.init(self.params, np.asarray([lr for lr, _ in combos], problem.dtype))
        self._last = None

    def train_step(self, x, y):
        if self._last is not None:  # one step in flight: the host prepares the next batch meanwhile
            self._last.block_until_ready()
        self.params, self.state, loss, correct = self.program.train(self.params, self.state, x, y)
        self._last = loss
        return loss, correct

    def eval_batch(self, x, y):
        return self.program.eval(self.params, x, y)
