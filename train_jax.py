"""Train the DeepOBS MNIST MLP or CIFAR-10 3c3d CNN with a jax_opt optimizer (Flax NNX).

    python train_jax.py -dataset mnist -optimizer adam -num_epochs 3
    python train_jax.py -num_epochs 100 -dataset cifar -num_train 16384 -data_dir ../shared/data

Takes the same flags as train_torch.py; with the same seed both start from the same weights,
see the same batches in the same order and follow the same trajectory (parity_tests).
A whole step (forward, backward, optimizer update) is one jitted function with its buffers
donated; the next batches are moved to the device in a background thread, and the per-step
losses are fetched once per epoch, so the host never waits on the device inside an epoch.
"""

from __future__ import annotations

import functools
import inspect
import io
import json
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
from jax_train import convert as jconvert
from jax_train.models import build_model
from twinopt import cli, convert, data, runs, torch_pickle, training
from twinopt.hparams import to_jax_kwargs
from twinopt.models import MODELS
from twinopt.schedules import lr_factor


def make_optimizer(args, total_steps):
    factory = jax_opt.OPTIMIZERS[args.optimizer]
    kwargs = to_jax_kwargs(args.optimizer, args.optimizer_kwargs)
    if args.schedule != "constant":
        base = kwargs.get("learning_rate", inspect.signature(factory).parameters["learning_rate"].default)
        kwargs["learning_rate"] = lambda count: base * lr_factor(args.schedule, count, total_steps, jnp)
    tx = factory(**kwargs)
    if args.lookahead:
        tx = jax_opt.lookahead(tx, sync_period=args.lookahead_k, slow_step_size=args.lookahead_alpha)
    return tx


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


def checkpoint(params, opt_state, meta):
    """The npz bytes: params and optimizer state under their key paths (``params/fc1/kernel``,
    ``opt_state/1/mu/fc1/kernel``: ``jax_train.convert.flatten``), so that train_torch.py can read
    them without JAX, and ``meta`` as JSON."""
    if jax.process_count() > 1:  # every process takes part; only the first writes
        params, opt_state = multihost_utils.process_allgather((params, opt_state), tiled=True)
    arrays = {f"{part}/{path}": value for part, tree in (("params", params), ("opt_state", opt_state))
              for path, value in jconvert.flatten(tree).items()}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, meta=np.array(json.dumps(meta)))
    return buffer.getvalue()


def read_torch_checkpoint(path, run, key, params, opt_state):
    """``(params, opt_state)`` as flat dicts and the meta of a train_torch.py checkpoint, read
    without torch and converted (``twinopt.convert``)."""
    try:
        ckpt = torch_pickle.load(path)
    except torch_pickle.UnsafeCheckpoint as err:
        raise runs.CheckpointError(f"{err}. Only use checkpoints train_torch.py wrote; move the file out of the "
                                   "folder to resume from the checkpoint before it.") from None
    except (torch_pickle.NotATorchCheckpoint, torch_pickle.UnsupportedCheckpoint) as err:
        raise runs.CheckpointError(str(err)) from None
    run.check_fingerprint(path, ckpt.get("config") if isinstance(ckpt, dict) else None)
    try:
        layout = jconvert.layout(params)
        flat_params = convert.weights_from_torch(ckpt["model"], layout)
        flat_state = convert.optimizer_state_from_torch(ckpt["optimizer"], jconvert.flatten(opt_state), key, layout,
                                                        ckpt["step"])
        meta = {name: ckpt[name] for name in ("epoch", "step", "epoch_state")}
    except (KeyError, TypeError, convert.ConversionError) as err:
        raise runs.CheckpointError(f"{path} does not fit this run's model and optimizer ({err})") from None
    return flat_params, flat_state, meta


def load_checkpoint(path, run, key, params, opt_state):
    """``(params, opt_state, meta)`` from a checkpoint of either script, in the structure of
    ``(params, opt_state)``; raise runs.CheckpointError if the file is not a checkpoint of this run."""
    if path.endswith(".pt"):
        flat_params, flat_state, meta = read_torch_checkpoint(path, run, key, params, opt_state)
    else:
        meta, arrays = runs.read_npz(path)
        run.check_fingerprint(path, meta.get("config"))
        if "num_leaves" in meta:  # written before the entries had names: the leaves in order
            # (and before AggMo's velocities were separate arrays: its entries are stacked)
            names = [f"params/{p}" for p in jconvert.flatten(params)]
            names += [f"opt_state/{p}" for p in jconvert.stacked_names(opt_state)]
            if meta["num_leaves"] != len(names):
                raise runs.CheckpointError(f"{path} holds {meta['num_leaves']} arrays, this run's model and "
                                           f"optimizer {len(names)}")
            arrays = {name: arrays[f"arr_{i}"] for i, name in enumerate(names)}
        flat_params, flat_state = runs.npz_part(arrays, "params"), runs.npz_part(arrays, "opt_state")
    try:
        if not path.endswith(".pt"):  # AggMo's velocities stacked, as train_jax.py saved them before: split
            flat_state = jconvert.split_stacked(flat_state, opt_state)
        params, opt_state = jconvert.unflatten(params, flat_params), jconvert.unflatten(opt_state, flat_state)
    except convert.ConversionError as err:
        raise runs.CheckpointError(f"{path} does not fit this run's model and optimizer ({err})") from None
    return params, opt_state, meta


def main(argv=None):
    args = cli.parse_args(argv, "jax")
    defaults = vars(cli.parse_args([], "jax"))
    if args.distributed:  # JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, or SLURM/Open MPI's
        jax.distributed.initialize(**{name: int(os.environ[var]) for name, var in (
            ("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID")) if var in os.environ})
        if jax.process_index():  # one process reports
            sys.stdout = open(os.devnull, "w")
            args.no_progress = True
    run = runs.RunDir(args, "jax", "npz", defaults, writer=jax.process_index() == 0)
    # x64 decides the dtype of JAX's scalars (step counts, schedule values): set it from -dtype
    # alone, whatever the caller had, so a float32 run is the same in any process.
    previous_x64 = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", args.dtype == "float64")
    try:
        return train(args, run)
    finally:
        jax.config.update("jax_enable_x64", previous_x64)


def train(args, run):
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

    def put_batch(batch):
        return tuple(jax.make_array_from_process_local_data(batch_sharding, a[rows]) for a in batch)

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

    def evaluate(params):
        total_loss, correct = 0.0, 0
        for xb, yb in data.eval_batches(ds.x_test, ds.y_test, args.eval_batch_size, dtype):
            xb, yb = (jax.make_array_from_process_local_data(replicated, a) for a in (xb, yb))
            batch_loss, batch_correct = eval_step(params, xb, yb)
            total_loss, correct = total_loss + float(fetch(batch_loss)), correct + int(fetch(batch_correct))
        return total_loss / len(ds.y_test), correct / len(ds.y_test)

    first_epoch, step, partial = 1, 0, None
    if args.resume:
        step, path, (params, opt_state, meta) = run.load_latest(
            lambda path: load_checkpoint(path, run, args.optimizer, params, opt_state))
        partial = meta["epoch_state"]
        first_epoch = meta["epoch"] if partial is not None else meta["epoch"] + 1  # None: saved at its epoch's end
        print(f"resumed from {path} (epoch {meta['epoch']}, step {step})", flush=True)
    params, opt_state = jax.device_put(params, param_shardings), jax.device_put(opt_state, state_shardings)
    run.start(data=ds.source, num_train_images=len(ds.y_train), num_test_images=len(ds.y_test))
    run.open_metrics(upto_step=step if args.resume else None, epoch_done=partial is None)
    augment = args.dataset == "cifar" and not args.no_augment
    start_time = time.time()

    def end_segment(state, losses, corrects, segment_start):
        """Fetch the segment's per-step losses (once, not per step) into the epoch state."""
        losses = np.array([fetch(loss) for loss in losses], dtype=np.float64)
        first = step - len(losses) + 1
        if not np.isfinite(losses).all():
            bad = first + int(np.argmin(np.isfinite(losses)))
            raise SystemExit(f"error: non-finite training loss at step {bad}; the last good checkpoint is kept.")
        state["losses"] += losses.tolist()
        state["correct"] += int(sum(fetch(correct) for correct in corrects))
        state["seen"] += len(losses) * args.batch_size
        state["time_s"] += time.perf_counter() - segment_start
        return [{"step": first + i, "epoch": epoch, "loss": float(v)} for i, v in enumerate(losses)]

    with training.StopOnSignal() as stop:
        for epoch in range(first_epoch, args.num_epochs + 1):
            state, partial = partial or training.new_epoch_state(), None
            losses, corrects = [], []
            bar = training.progress(steps_per_epoch, f"epoch {epoch}", args.no_progress)
            bar.update(len(state["losses"]))
            segment_start = time.perf_counter()
            batches = data.train_batches(ds.x_train, ds.y_train, args.batch_size, epoch=epoch, seed=args.seed,
                                         augment=augment, dtype=dtype, start_step=len(state["losses"]))
            for x, y in prefetch(batches, put_batch):
                params, opt_state, loss, correct = train_step(params, opt_state, x, y)
                step += 1
                losses.append(loss)
                corrects.append(correct)
                bar.update()
                if len(losses) % 50 == 0:  # reading a loss waits for its step: only now and then
                    rate = len(losses) * args.batch_size / (time.perf_counter() - segment_start)
                    bar.set_postfix_str(f"loss {float(fetch(loss)):.4f}, {rate:.0f} samples/s")
                if stop_requested(stop, step):
                    records = end_segment(state, losses, corrects, segment_start)
                    run.metrics.write(step, records)
                    run.save_checkpoint(step, checkpoint(params, opt_state, {
                        "epoch": epoch, "step": step, "epoch_state": state, "config": run.fingerprint()}))
                    bar.close()
                    stop.exit(run.path, "train_jax.py", step)
            records = end_segment(state, losses, corrects, segment_start)
            bar.close()
            test_loss, test_acc = evaluate(params)
            record = training.epoch_record(epoch, step, state, test_loss, test_acc, start_time)
            run.end_epoch(step, records, record, checkpoint(params, opt_state, {
                "epoch": epoch, "step": step, "epoch_state": None, "config": run.fingerprint()}),
                args.keep_checkpoints)
            training.print_epoch(record, args.num_epochs)
    return run.path


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
