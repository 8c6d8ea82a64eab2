"""Cross-backend continuation: k steps in one training script, ``-resume`` in the other.

For every optimizer key and Lookahead, in both directions and on both models, the per-step
losses, the epoch records and the final weights equal those of an uninterrupted run in either
backend (float64, 1e-9 relative). The run stops mid-epoch (SIGTERM after step K), so the epoch's
progress, the optimizer state, the schedule position and the Lookahead counter all cross, and
the epochs' test evaluations run in the other backend.
``python -m parity_tests.test_cross_backend`` prints the largest errors per key and direction.
"""

import json
import os

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from jax_train import checkpoints as jconvert
from jax_train import models as jm
from jax_train import train as train_jax
from torch_train import models as tm
from torch_train import train as train_torch
from twinopt import data, runs
from twinopt.registry import KEYS

TOL = 1e-9  # SPEC.md, float64
BATCH, IMAGES, EPOCHS, STOP = 8, 48, 2, 4  # 6 steps an epoch, 12 in all, stopped after step 4
SCRIPTS = {"torch": train_torch, "jax": train_jax}
SIZES = {"mnist": {"hidden": (16, 8)}, "cifar": {"channels": (3, 4, 5), "dense": (8, 8)}}
MODEL_FLAGS = {"mnist": ["-mlp_hidden", "16,8"], "cifar": ["-cnn_channels", "3,4,5", "-cnn_dense", "8,8"]}  # = SIZES
# Every key with weight decay and a cosine schedule (its position crosses as the step count);
# Lookahead around three kinds of state; AMSGrad-style max moments via adamw's flag.
CASES = {key: (key, []) for key in KEYS}
CASES |= {
    "momentum+lookahead": ("momentum", ["-lookahead", "-lookahead_k", "3"]),
    "adam+lookahead": ("adam", ["-lookahead", "-lookahead_k", "3"]),
    "aggmo+lookahead": ("aggmo", ["-lookahead", "-lookahead_k", "3"]),
    "adamw-amsgrad": ("adamw", ["-amsgrad"]),
    "rmsprop-centered": ("rmsprop", ["-momentum", "0.5", "-centered"]),
}


def write_fake_data(folder):
    rng = np.random.default_rng(0)
    for name, shape in (("mnist.npz", (28, 28)), ("cifar10.npz", (32, 32, 3))):
        np.savez(folder / name, x_train=rng.integers(0, 256, (IMAGES, *shape), dtype=np.uint8),
                 y_train=rng.integers(0, 10, IMAGES, dtype=np.uint8),
                 x_test=rng.integers(0, 256, (40, *shape), dtype=np.uint8),
                 y_test=rng.integers(0, 10, 40, dtype=np.uint8))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    write_fake_data(folder)
    return folder


def flags(data_dir, dataset, case):
    key, extra = CASES[case]
    return ["-dataset", dataset, "-data_dir", str(data_dir), "-batch_size", str(BATCH), "-num_epochs", str(EPOCHS),
            "-optimizer", key, "-weight_decay", "1e-3", "-schedule", "cosine", "-dtype", "float64", "-no_progress",
            "-eval_batch_size", "20", *MODEL_FLAGS[dataset], *extra]


def run_script(backend, argv, stop=None):
    previous = os.environ.pop(runs.FAULT_ENV, None)
    if stop is not None:
        os.environ[runs.FAULT_ENV] = f"sigterm@{stop}"
    try:
        SCRIPTS[backend].main(argv)
    except SystemExit as stopped:
        assert stop is not None and stopped.code == 143, stopped
    finally:
        os.environ.pop(runs.FAULT_ENV, None)
        if previous is not None:
            os.environ[runs.FAULT_ENV] = previous


def metrics(run):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def final_weights(run):
    """The newest checkpoint's weights in torch layout, whichever script wrote it."""
    return runs.read_weights(os.path.join(run, "checkpoints", max(os.listdir(os.path.join(run, "checkpoints")))))


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def weights_rel(a, b):
    """Per-element error relative to the tensor's scale, over all weights."""
    return max(float(np.max(np.abs(a[k] - b[k]) / np.max(np.abs(b[k])))) for k in b)


def errors(tmp_path, data_dir, dataset, case):
    """{(direction, reference backend): (loss error, weight error)} and the runs' records."""
    argv = flags(data_dir, dataset, case)
    straight = {}
    for backend in SCRIPTS:
        run_script(backend, [*argv, "-out_dir", str(tmp_path / backend)])
        straight[backend] = tmp_path / backend
    found = {}
    for first, second in (("torch", "jax"), ("jax", "torch")):
        run = tmp_path / f"{first}-then-{second}"
        run_script(first, [*argv, "-out_dir", str(run)], stop=STOP)
        run_script(second, ["-out_dir", str(run), "-resume", "-no_progress"])
        got = metrics(run)
        ckpts = sorted(os.listdir(run / "checkpoints"))
        assert max(ckpts).endswith({"jax": ".npz", "torch": ".pt"}[second])
        for reference, ref_run in straight.items():
            want = metrics(ref_run)
            losses = [r["loss"] for r in got if "loss" in r], [r["loss"] for r in want if "loss" in r]
            assert len(losses[0]) == len(losses[1]) == EPOCHS * IMAGES // BATCH
            epochs = [(r["epoch"], r["step"], r["test_acc"]) for r in got if "loss" not in r]
            assert epochs == [(r["epoch"], r["step"], r["test_acc"]) for r in want if "loss" not in r]
            test_losses = [r["test_loss"] for r in got if "loss" not in r], [r["test_loss"] for r in want
                                                                           if "loss" not in r]
            found[(f"{first}->{second}", reference)] = (
                max(rel(*losses), rel(*test_losses)), weights_rel(final_weights(run), final_weights(ref_run)))
        assert abs(losses[1][-1] - losses[1][0]) > 1e-6  # guard: training moved
    return found


# Every case on the MLP; on the CNN (slower) the cases whose state differs most in kind: the
# layouts of every key on the CNN are covered by parity_tests/test_conversion.py.
CNN_CASES = ("adabound", "aggmo", "rmsprop-centered", "adam+lookahead", "aggmo+lookahead")


@pytest.mark.parametrize("dataset,case", [("mnist", case) for case in CASES] + [("cifar", case) for case in CNN_CASES])
def test_continue_in_the_other_backend(tmp_path, data_dir, dataset, case):
    for (direction, reference), (loss_error, weight_error) in errors(tmp_path, data_dir, dataset, case).items():
        assert loss_error <= TOL, (direction, reference, loss_error)
        assert weight_error <= TOL, (direction, reference, weight_error)


if __name__ == "__main__":  # the table of the closing note and the README
    import tempfile
    from pathlib import Path

    import jax

    jax.config.update("jax_enable_x64", True)
    print("| model | case | torch->jax losses | torch->jax weights | jax->torch losses | jax->torch weights |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        write_fake_data(data)
        for dataset in MODEL_FLAGS:
            for case in CASES:
                folder = Path(tempfile.mkdtemp(dir=tmp))
                found = errors(folder, data, dataset, case)
                worst = {d: [max(v[i] for (dd, _), v in found.items() if dd == d) for i in (0, 1)]
                         for d in ("torch->jax", "jax->torch")}
                print(f"| {dataset} | {case} | " + " | ".join(f"{e:.1e}" for d in worst for e in worst[d]) + " |",
                      flush=True)


def evaluate(backend, dataset, weights, data_dir):
    """(test loss, test accuracy) of torch-layout ``weights`` computed by ``backend``'s model."""
    ds = data.load_dataset(dataset, data_dir)
    if backend == "jax":
        model = jm.build_model(dataset, 0, jnp.float64, **SIZES[dataset])
        jconvert.load_torch_state_dict(model, weights)
    else:
        model = tm.build_model(dataset, 0, torch.float64, **SIZES[dataset])
        model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    loss, correct = 0.0, 0
    for x, y in data.eval_batches(ds.x_test, ds.y_test, 20, np.float64):
        if backend == "jax":
            logits = np.asarray(model(jnp.asarray(x)))
            loss += float(optax.softmax_cross_entropy_with_integer_labels(logits, y).sum())
        else:
            with torch.no_grad():
                logits = model(torch.from_numpy(x))
                loss += float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(y), reduction="sum"))
            logits = logits.numpy()
        correct += int(np.sum(np.argmax(logits, -1) == y))
    return loss / len(ds.y_test), correct / len(ds.y_test)


@pytest.mark.parametrize("dataset", ["mnist", "cifar"])
def test_trained_in_one_backend_evaluated_in_the_other(tmp_path, data_dir, dataset):
    """The final weights of each script's run, evaluated by the other backend's model, give the
    test accuracy the run recorded (and its test loss to 1e-9)."""
    torch_default = torch.get_default_dtype()
    for backend, other in (("torch", "jax"), ("jax", "torch")):
        run = tmp_path / backend
        run_script(backend, [*flags(data_dir, dataset, "adam"), "-out_dir", str(run)])
        recorded = [r for r in metrics(run) if "loss" not in r][-1]
        test_loss, test_acc = evaluate(other, dataset, final_weights(run), data_dir)
        assert test_acc == recorded["test_acc"]
        assert rel(test_loss, recorded["test_loss"]) <= TOL
    torch.set_default_dtype(torch_default)
