"""Train the DeepOBS MNIST MLP or CIFAR-10 3c3d CNN with a jax_opt optimizer (Flax NNX).

    python train_jax.py -dataset mnist -optimizer adam -num_epochs 3
    python train_jax.py -num_epochs 100 -dataset cifar -num_train 16384 -data_dir ../shared/data

Takes the same flags as train_torch.py (``torch_train.train``, this module's mirror image); with
the same seed both start from the same weights, see the same batches in the same order and
follow the same trajectory (parity_tests). A whole step (forward, backward, optimizer update) is
one jitted function with its buffers donated; the next batches are moved to the device in a
background thread, and the per-step losses are fetched once per epoch, so the host never waits
on the device inside an epoch. Checkpoints: ``jax_train.checkpoints``.
"""

from __future__ import annotations

import functools
import inspect
import os
import queue
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jax_opt
from jax_train.checkpoints import checkpoint_bytes, load_checkpoint
from jax_train.models import build_model
from twinopt import cli, data, runs, training
from twinopt.registry import INFO, to_jax_kwargs
from twinopt.models import MODELS
from twinopt.schedules import lr_factor


def make_optimizer(args, total_steps):
    factory = jax_opt.OPTIMIZERS[args.optimizer]
    kwargs = {**INFO[args.optimizer].flax_kwargs, **to_jax_kwargs(args.optimizer, args.optimizer_kwargs)}
    if args.schedule != "constant":
        base = kwargs.get("learning_rate", inspect.signature(factory).parameters["learning_rate"].default)
        kwargs["learning_rate"] = lambda count: base * lr_factor(args.schedule, count, total_steps, jnp)
    tx = factory(**kwargs)
    if args.lookahead:
        tx = jax_opt.lookahead(tx, sync_period=args.lookahead_k, slow_step_size=args.lookahead_alpha)
    return tx


# ---- devices and processes ----------------------------------------------------------------------


def init_distributed(args):
    """(process index, process count): with -distributed, joined to the other processes
    (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, or SLURM/Open MPI's), else (0, 1).
    Only the first process reports."""
    if args.distributed:
        jax.distributed.initialize(**{name: int(os.environ[var]) for name, var in (
            ("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID")) if var in os.environ})
        if jax.process_index():  # one process reports
            sys.stdout = open(os.devnull, "w")
            args.no_progress = True
    return jax.process_index(), jax.process_count()


def device_mesh(args):
    """A 1-D mesh ("data") over the devices that share each batch: every device of every process,
    or the first ``-devices``."""
    devices = jax.devices()
    if args.devices is not None:
        if args.distributed:
            raise SystemExit("error: -devices selects devices of a single process; a -distributed run uses every "
                             "device of every process")
        if args.devices > len(devices):
            raise SystemExit(f"error: -devices {args.devices}: this process sees {len(devices)} device(s) "
                             f"({devices[0].platform}).")
        devices = devices[:args.devices]
    if args.batch_size % len(devices):
        raise SystemExit(f"error: -batch_size {args.batch_size} does not split over {len(devices)} devices; choose "
                         f"a multiple of {len(devices)}, or fewer -devices.")
    return Mesh(np.array(devices), ("data",))


def shardings(mesh, tree, shard=False):
    """Replicated everywhere, or with ``shard`` (-shard_optimizer) each leaf split along its first
    axis that divides evenly over the devices: the optimizers are elementwise, so each device
    updates its slice (ZeRO-style); leaves without such an axis stay replicated."""

    def one(leaf):
        for axis, size in enumerate(leaf.shape if shard else ()):
            if size % mesh.size == 0:
                return NamedSharding(mesh, P(*[None] * axis, "data"))
        return NamedSharding(mesh, P())

    return jax.tree.map(one, tree)


def host_rows(mesh, size):
    """The rows of a batch of ``size`` whose devices this process drives (all, with one process)."""
    local = [i for i, d in enumerate(mesh.devices) if d.process_index == jax.process_index()]
    per_device = size // mesh.size
    return slice(local[0] * per_device, (local[-1] + 1) * per_device)


def put_batch(batch, sharding, rows):
    """This process's ``rows`` of a global batch, as arrays split over the mesh."""
    return tuple(jax.make_array_from_process_local_data(sharding, a[rows]) for a in batch)


def prefetch(batches, put, size=2):
    """Yield the batches already on the devices (``put``), transferred in a background thread."""
    q = queue.Queue(maxsize=size)
    done, stop = object(), threading.Event()

    def worker():
        try:
            for batch in batches:
                if stop.is_set():
                    return
                q.put(put(batch))
        except BaseException as err:  # re-raised in the consumer
            q.put(err)
        q.put(done)

    threading.Thread(target=worker, daemon=True).start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:  # the consumer stopped early: let the worker finish
        stop.set()
        while not q.empty():
            q.get_nowait()


def fetch(x):
    """A replicated array's value on this host (multi-process arrays are not fully addressable)."""
    return np.asarray(x.addressable_data(0))


def stop_requested(stop, step):
    """Whether to stop after this step; in a multi-process run, if any process was asked to (all
    stop at the same step: a collective, so a sync of the processes every step)."""
    requested = stop.requested(step)
    if jax.process_count() == 1:
        return requested
    return bool(np.any(multihost_utils.process_allgather(np.int32(requested))))


# ---- steps --------------------------------------------------------------------------------------


def make_steps(graphdef, tx, param_shardings, state_shardings, replicated):
    """``(train_step, eval_step)``, jitted: ``train_step(params, opt_state, x, y)`` is forward,
    backward and update (params and state donated) and returns ``(params, opt_state, loss,
    correct)``; ``eval_step(params, x, y)`` returns the batch's summed loss and its correct count."""

    def loss_and_logits(params, x, y):
        logits = nnx.merge(graphdef, params)(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, opt_state, x, y):
        (loss, logits), grads = jax.value_and_grad(loss_and_logits, has_aux=True)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = jax.lax.with_sharding_constraint(optax.apply_updates(params, updates), param_shardings)
        opt_state = jax.lax.with_sharding_constraint(opt_state, state_shardings)
        correct = jnp.sum(jnp.argmax(logits, -1) == y)
        return params, opt_state, *jax.lax.with_sharding_constraint((loss, correct), replicated)

    @jax.jit
    def eval_step(params, x, y):
        loss, logits = loss_and_logits(params, x, y)
        return loss * len(y), jnp.sum(jnp.argmax(logits, -1) == y)

    return train_step, eval_step


def evaluate(eval_step, params, x, y, args, dtype, replicated):
    """(mean loss, accuracy) on the test set ``(x, y)``."""
    total_loss, correct = 0.0, 0
    for xb, yb in data.eval_batches(x, y, args.eval_batch_size, dtype):
        xb, yb = (jax.make_array_from_process_local_data(replicated, a) for a in (xb, yb))
        batch_loss, batch_correct = eval_step(params, xb, yb)
        total_loss, correct = total_loss + float(fetch(batch_loss)), correct + int(fetch(batch_correct))
    return total_loss / len(y), correct / len(y)


def end_segment(state, losses, corrects, segment_start, step, epoch, batch_size):
    """Fetch the segment's per-step losses (once, not per step) into the epoch state; its records."""
    losses = np.array([fetch(loss) for loss in losses], dtype=np.float64)
    first = step - len(losses) + 1
    if not np.isfinite(losses).all():
        bad = first + int(np.argmin(np.isfinite(losses)))
        raise SystemExit(f"error: non-finite training loss at step {bad}; the last good checkpoint is kept.")
    state["losses"] += losses.tolist()
    state["correct"] += int(sum(fetch(correct) for correct in corrects))
    state["seen"] += len(losses) * batch_size
    state["time_s"] += time.perf_counter() - segment_start
    return [{"step": first + i, "epoch": epoch, "loss": float(v)} for i, v in enumerate(losses)]


# ---- the run ------------------------------------------------------------------------------------


def train(args, run):
    """Train (or with -resume continue) the run in ``run`` (a ``twinopt.runs.RunDir``); its folder."""
    dtype = np.float64 if args.dtype == "float64" else np.float32
    try:
        ds = data.load_dataset(args.dataset, args.data_dir, args.data_source, args.num_train, args.seed)
    except data.DataError as err:
        raise SystemExit(f"error: {err}") from None
    print(f"data: {ds.source}; {len(ds.y_train)} train / {len(ds.y_test)} test images", flush=True)
    model = build_model(MODELS[args.dataset], args.seed, dtype,
                        hidden=args.mlp_hidden, channels=args.cnn_channels, dense=args.cnn_dense)
    graphdef, params = nnx.split(model)
    steps_per_epoch = data.steps_per_epoch(len(ds.y_train), args.batch_size)
    if steps_per_epoch == 0:
        raise SystemExit(f"error: -batch_size {args.batch_size} is larger than the {len(ds.y_train)} training images.")
    mesh = device_mesh(args)
    try:
        tx = make_optimizer(args, args.num_epochs * steps_per_epoch)
    except ValueError as err:
        raise cli.hyperparameter_error(err, args) from None
    opt_state = tx.init(params)
    num_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
    print(f"model: {MODELS[args.dataset]}, {num_params:,} params, {args.dtype}; "
          f"optimizer: {cli.describe_optimizer(args)}; schedule: {args.schedule}", flush=True)
    if mesh.size > 1:
        print(f"devices: {mesh.size} x {mesh.devices[0].platform} in {jax.process_count()} process(es), "
              f"{args.batch_size // mesh.size} images each a step; optimizer state "
              f"{'sharded' if args.shard_optimizer else 'replicated'}", flush=True)
    replicated, batch_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    param_shardings, state_shardings = shardings(mesh, params), shardings(mesh, opt_state, args.shard_optimizer)
    rows = host_rows(mesh, args.batch_size)
    train_step, eval_step = make_steps(graphdef, tx, param_shardings, state_shardings, replicated)

    first_epoch, step, partial = 1, 0, None
    if args.resume:
        step, path, (params, opt_state, epoch, partial) = run.load_latest(
            lambda path: load_checkpoint(path, run, args.optimizer, params, opt_state))
        first_epoch = epoch if partial is not None else epoch + 1  # None: saved at the end of its epoch
        print(f"resumed from {path} (epoch {epoch}, step {step})", flush=True)
    params, opt_state = jax.device_put(params, param_shardings), jax.device_put(opt_state, state_shardings)
    run.start(data=ds.source, num_train_images=len(ds.y_train), num_test_images=len(ds.y_test))
    run.open_metrics(upto_step=step if args.resume else None, epoch_done=partial is None)
    augment = args.dataset == "cifar" and not args.no_augment
    start_time = time.time()

    with training.StopOnSignal() as stop:
        for epoch in range(first_epoch, args.num_epochs + 1):
            state, partial = partial or training.new_epoch_state(), None
            losses, corrects = [], []
            bar = training.progress(steps_per_epoch, f"epoch {epoch}", args.no_progress)
            bar.update(len(state["losses"]))
            segment_start = time.perf_counter()
            batches = data.train_batches(ds.x_train, ds.y_train, args.batch_size, epoch=epoch, seed=args.seed,
                                         augment=augment, dtype=dtype, start_step=len(state["losses"]))
            for x, y in prefetch(batches, lambda batch: put_batch(batch, batch_sharding, rows)):
                params, opt_state, loss, correct = train_step(params, opt_state, x, y)
                step += 1
                losses.append(loss)
                corrects.append(correct)
                bar.update()
                if len(losses) % 50 == 0:  # reading a loss waits for its step: only now and then
                    rate = len(losses) * args.batch_size / (time.perf_counter() - segment_start)
                    bar.set_postfix_str(f"loss {float(fetch(loss)):.4f}, {rate:.0f} samples/s")
                if stop_requested(stop, step):
                    records = end_segment(state, losses, corrects, segment_start, step, epoch, args.batch_size)
                    run.metrics.write(step, records)
                    run.save_checkpoint(step, checkpoint_bytes(params, opt_state, {
                        "epoch": epoch, "step": step, "epoch_state": state, "config": run.fingerprint()}))
                    bar.close()
                    stop.exit(run.path, "train_jax.py", step)
            records = end_segment(state, losses, corrects, segment_start, step, epoch, args.batch_size)
            bar.close()
            test_loss, test_acc = evaluate(eval_step, params, ds.x_test, ds.y_test, args, dtype, replicated)
            record = training.epoch_record(epoch, step, state, test_loss, test_acc, start_time)
            run.end_epoch(step, records, record, checkpoint_bytes(params, opt_state, {
                "epoch": epoch, "step": step, "epoch_state": None, "config": run.fingerprint()}),
                args.keep_checkpoints)
            training.print_epoch(record, args.num_epochs)
    return run.path


def main(argv=None):
    """Run ``train_jax.py`` with the flags ``argv`` (default: the command line); the exit code."""
    args = cli.parse_args(argv, "jax")
    defaults = vars(cli.parse_args([], "jax"))
    rank, _ = init_distributed(args)
    run = runs.RunDir(args, "jax", "npz", defaults, writer=rank == 0)
    # x64 decides the dtype of JAX's scalars (step counts, schedule values): set it from -dtype
    # alone, whatever the caller had, so a float32 run is the same in any process.
    previous_x64 = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", args.dtype == "float64")
    try:
        path = train(args, run)
    finally:
        jax.config.update("jax_enable_x64", previous_x64)
    return 0 if path else 1


if __name__ == "__main__":
    sys.exit(main())
