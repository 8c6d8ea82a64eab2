"""The comparison of every optimizer on MNIST and CIFAR-10: its protocol, learning-rate grid, rows,
records, resumption, the choice of the learning rate and the tables (``compare.py`` runs it).

The protocol follows the benchmark literature (DeepOBS, Schneider et al. 2019; Schmidt, Schneider &
Hennig 2021): for each row (the 15 optimizer keys, and Lookahead around momentum and around Adam),

1. tune: one run per learning rate of a log-spaced grid around the row's usual learning rate
   (:data:`LR_CENTRES` times ``lr_factors``, half a decade apart by default), ``tune_epochs`` long,
   seed ``tune_seed``, trained on the training images minus a validation split and evaluated on that
   split after every epoch;
2. choose: the learning rate whose run ends with the best validation accuracy (:func:`choose_lr`);
   the test set plays no part;
3. final: the chosen learning rate with every seed of ``seeds``, ``final_epochs`` long, evaluated on
   the test set after every epoch.

Every other hyperparameter keeps its default (weight decay too: 0, AdamW's 1e-2), the learning rate
is constant, and a seed sets the initial weights, the batch order and the augmentation exactly as
``-seed`` does in the training scripts. The validation split (stratified, seed 0) is fixed by the
protocol; the training images are the rest, or a seeded subset of ``num_train`` of them.

Each run writes one JSON record, ``<out>/<dataset>/records/<phase>-<row>-lr<lr>-seed<seed>.json``,
carrying the protocol's settings and their hash; ``<out>/<dataset>/protocol.json`` holds them too. A
run whose record exists is skipped, and a folder or record of another protocol is an error, never
overwritten. The tables and plots are rebuilt from the records alone (:func:`report`).

Backend-neutral: NumPy only. The engines (``jax_train.comparison``: all runs of a row at once under
``jax.vmap``; ``torch_train.comparison``: one after another) are passed in. ``engine.start(row, combos)``
returns a group training the first ``group.size`` of the ``(lr, seed)`` combos, with
``train_step(x, y)`` (per-run batches stacked on a leading axis) -> per-run ``(loss, correct)`` and
``eval_batch(x, y)`` (one batch for all) -> per-run ``(loss sum, correct)``; the epoch loop, the
batches, the evaluation and the records are written once, here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np

from . import data, plots, training
from .models import MODELS, model_sizes
from .registry import LOOKAHEAD_ALPHA, LOOKAHEAD_K, OPTIM_DB, ROWS, split_row
from .runs import atomic_write, jsonable

PHASES = ("tune", "final")

# The centre of each key's learning-rate grid (the registry's ``lr_centre``: the rate it is usually
# run with). The Lookahead rows take their inner key's.
LR_CENTRES = {info.key: info.lr_centre for info in OPTIM_DB}


def log_grid(decades: float) -> tuple:
    """A grid around the centre: points half a decade apart, ``decades`` either side."""
    return tuple(10 ** (k / 2) for k in range(-round(2 * decades), round(2 * decades) + 1))


SPLIT_SEED = 0  # the validation split and the training subset: part of the problem, not of a run

# The default budget per dataset: the committed runs' (README "Results"), each sized so that its
# whole protocol runs within one 3-hour session on a 2-core CPU. 5 learning rates (1 decade either
# side); MNIST: 2 tuning epochs, final runs 3 seeds x 5 epochs (425 run-epochs of 5 s); CIFAR-10,
# an epoch 6x dearer (16,384 images through the CNN, 30 s with torch): 1 tuning epoch, 3 seeds x 2
# epochs (187 run-epochs). The validation split: num_val images, at most a sixth of the training
# set (MNIST's offline default has 4,000 training images).
DEFAULTS = {
    "mnist": {"num_train": None, "num_val": 10_000, "lr_factors": log_grid(1), "tune_epochs": 2,
              "final_epochs": 5, "seeds": (0, 1, 2)},
    "cifar": {"num_train": 16_384, "num_val": 5_000, "lr_factors": log_grid(1), "tune_epochs": 1,
              "final_epochs": 2, "seeds": (0, 1, 2)},
}


class CompareError(ValueError):
    """A bad setting or a folder that does not fit: the message says what to change."""


def parse_row(row: str) -> tuple[str, bool]:
    """``(key, lookahead)`` of a row: ``"adam+lookahead"`` -> ``("adam", True)``."""
    try:
        return split_row(row)
    except ValueError as err:
        raise CompareError(str(err)) from None


@dataclasses.dataclass(frozen=True)
class Protocol:
    """Everything that decides a run's result besides its row, learning rate and seed."""

    dataset: str
    backend: str
    num_train: int | None
    num_val: int | None  # None: the dataset's default, at most a sixth of the training images (load_problem)
    batch_size: int
    tune_epochs: int
    final_epochs: int
    lr_factors: tuple
    tune_seed: int
    seeds: tuple
    dtype: str
    augment: bool
    lookahead_k: int
    lookahead_alpha: float
    sizes: dict  # the model's sizes (twinopt.models.model_sizes)
    data_sha256: str = ""  # of the dataset's arrays, set by load_problem

    def __post_init__(self):
        if not self.lr_factors:
            raise CompareError("the learning-rate grid is empty: give -lr_factors at least one multiplier of the "
                               "rows' usual learning rates, e.g. -lr_factors 0.1,0.316,1,3.16,10")
        if not all(math.isfinite(f) and f > 0 for f in self.lr_factors):
            raise CompareError(f"-lr_factors {','.join(map(str, self.lr_factors))}: every multiplier must be a "
                               "positive number")
        if not self.seeds:
            raise CompareError("no seeds for the final runs: give -seeds, e.g. -seeds 0,1,2")
        for name in ("batch_size", "tune_epochs", "final_epochs", "num_val", "lookahead_k"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise CompareError(f"-{name} must be >= 1, got {getattr(self, name)}")
        if self.num_train is not None and self.num_train < 1:
            raise CompareError(f"-num_train must be >= 1, got {self.num_train}")
        if min(self.seeds + (self.tune_seed,)) < 0:
            raise CompareError("seeds must be >= 0")
        if not 0 < self.lookahead_alpha <= 1:
            raise CompareError(f"-lookahead_alpha must be in (0, 1], got {self.lookahead_alpha}")

    def config(self) -> dict:
        """The settings as JSON values, with the selection rule they imply. The rows' grid centres
        are not among them: an optimizer added to the registry leaves the protocol as it was (each
        record carries its row's centre)."""
        return jsonable({**dataclasses.asdict(self), "model": MODELS[self.dataset], "split_seed": SPLIT_SEED,
                         "selection": "best final val_acc of the tune runs"})

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.config(), sort_keys=True).encode()).hexdigest()[:12]

    def accepts(self, stored: dict) -> bool:
        """Whether a folder's ``protocol.json`` is this protocol. Folders written before the
        centres left the settings list every key's centre of that day (``lr_centres``): they are
        this protocol if the rest is the same and each centre they list is still the key's."""
        if stored.get("hash") == self.hash():
            return True
        config = dict(stored.get("config", {}))
        centres = config.pop("lr_centres", None)
        return centres is not None and config == self.config() and all(
            LR_CENTRES.get(key) == centre for key, centre in centres.items())

    def grid(self, row: str) -> list[float]:
        """The row's learning rates, rounded to 3 significant digits (so they name files exactly)."""
        centre = LR_CENTRES[parse_row(row)[0]]
        return list(dict.fromkeys(float(f"{centre * f:.3g}") for f in self.lr_factors))

    def epochs(self, phase: str) -> int:
        return self.tune_epochs if phase == "tune" else self.final_epochs


def make_protocol(dataset, backend, *, num_train=None, num_val=None, batch_size=128, lr_factors=None,
                  tune_epochs=None, final_epochs=None, tune_seed=0, seeds=None, dtype="float32", augment=True,
                  lookahead_k=LOOKAHEAD_K, lookahead_alpha=LOOKAHEAD_ALPHA, **sizes) -> Protocol:
    """A Protocol with the dataset's :data:`DEFAULTS` for the settings left as None."""
    if dataset not in DEFAULTS:
        raise CompareError(f"unknown dataset {dataset!r}; choose from: {', '.join(DEFAULTS)}")
    given = {"num_train": num_train, "num_val": num_val, "lr_factors": lr_factors, "tune_epochs": tune_epochs,
             "final_epochs": final_epochs, "seeds": seeds}
    settings = {**DEFAULTS[dataset], **{k: v for k, v in given.items() if v is not None}, "num_val": num_val}
    try:
        sizes = model_sizes(MODELS[dataset], **sizes)
    except ValueError as err:
        raise CompareError(f"{err}: fix -mlp_hidden, -cnn_channels or -cnn_dense") from None
    return Protocol(dataset, backend, batch_size=batch_size, tune_seed=tune_seed, dtype=dtype,
                    augment=augment and dataset == "cifar", lookahead_k=lookahead_k, lookahead_alpha=lookahead_alpha,
                    sizes=sizes,
                    **{**settings, "lr_factors": tuple(settings["lr_factors"]), "seeds": tuple(settings["seeds"])})


# ---------------------------------------------------------------------------------------------------
# the problem: data split, batches, the training loop


@dataclasses.dataclass
class Problem:
    """A protocol's data in memory: the training images, and the named evaluation sets."""

    protocol: Protocol
    x_train: np.ndarray = dataclasses.field(repr=False)
    y_train: np.ndarray = dataclasses.field(repr=False)
    evals: dict = dataclasses.field(repr=False)  # "val", "test" -> (x, y)
    source: str = ""
    eval_batch_size: int = 1000

    @property
    def dtype(self):
        return np.dtype(self.protocol.dtype)

    @property
    def model(self) -> str:
        return MODELS[self.protocol.dataset]

    @property
    def steps_per_epoch(self) -> int:
        return data.steps_per_epoch(len(self.y_train), self.protocol.batch_size)


def load_problem(protocol: Protocol, data_dir=None, data_source="auto", eval_batch_size=1000) -> Problem:
    """Load the dataset, hold out the validation split, take the training subset; the protocol
    returned with the problem records the data's hash, so other data is another protocol."""
    if eval_batch_size < 1:
        raise CompareError(f"-eval_batch_size must be >= 1, got {eval_batch_size}")
    ds = data.load_dataset(protocol.dataset, data_dir, data_source)
    if protocol.num_val is None:
        protocol = dataclasses.replace(protocol, num_val=min(DEFAULTS[protocol.dataset]["num_val"], ds.num_train // 6))
    digest = hashlib.sha256()
    for array in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
        digest.update(np.ascontiguousarray(array).tobytes())
    protocol = dataclasses.replace(protocol, data_sha256=digest.hexdigest()[:16])
    if protocol.num_val >= ds.num_train:
        raise CompareError(f"-num_val {protocol.num_val} is not smaller than the {ds.num_train} training images "
                           f"of {ds.source}; lower -num_val")
    x, y, x_val, y_val = data.validation_split(ds.x_train, ds.y_train, protocol.num_val, SPLIT_SEED, True)
    if protocol.num_train is not None:
        if protocol.num_train > len(y):
            raise CompareError(f"-num_train {protocol.num_train} is more than the {len(y)} training images left "
                               f"after the validation split of {protocol.num_val}; lower -num_train or -num_val")
        keep = np.sort(np.random.default_rng(SPLIT_SEED).permutation(len(y))[: protocol.num_train])
        x, y = x[keep], y[keep]
    if data.steps_per_epoch(len(y), protocol.batch_size) == 0:
        raise CompareError(f"-batch_size {protocol.batch_size} is larger than the {len(y)} training images; "
                           "lower -batch_size")
    return Problem(protocol, x, y, {"val": (x_val, y_val), "test": (ds.x_test, ds.y_test)}, ds.source,
                   eval_batch_size)


def group_batches(problem: Problem, seeds, epoch):
    """Each step's batches of a group of runs, stacked on a leading axis: run i gets the batches
    ``data.train_batches`` gives its seed (its order and augmentation), as ``-seed`` does in the
    training scripts. Runs that share a seed share one stream."""
    p = problem.protocol
    unique = sorted(set(seeds))
    streams = [data.train_batches(problem.x_train, problem.y_train, p.batch_size, epoch=epoch, seed=s,
                                  augment=p.augment, dtype=problem.dtype) for s in unique]
    position = [unique.index(s) for s in seeds]
    for batches in zip(*streams):
        yield np.stack([batches[i][0] for i in position]), np.stack([batches[i][1] for i in position])


def evaluate(group, problem: Problem, name: str):
    """Per-run mean loss and accuracy on the evaluation set ``name``."""
    x, y = problem.evals[name]
    loss, correct = 0.0, 0
    for xb, yb in data.eval_batches(x, y, problem.eval_batch_size, problem.dtype):
        batch_loss, batch_correct = group.eval_batch(xb, yb)
        loss, correct = loss + np.asarray(batch_loss, np.float64), correct + np.asarray(batch_correct)
    return loss / len(y), correct / len(y)


def _finite(value):
    """JSON has no NaN: a diverged run's losses are recorded as null."""
    value = float(value)
    return value if math.isfinite(value) else None


def train_group(group, problem: Problem, row: str, combos, epochs: int, evals=(), show_progress=False):
    """Train a group's runs for ``epochs``; per run ``{"step_loss": [...], "epochs": [per-epoch metrics]}``.

    ``epoch_time_s`` is the wall time of the group's training steps (not of the evaluation): a
    vmapped group's runs share it. A run that diverges keeps going (its losses become null), so
    every run of a group does the same work."""
    seeds = [seed for _, seed in combos]
    size = problem.protocol.batch_size
    results = [{"step_loss": [], "epochs": []} for _ in combos]
    for epoch in range(1, epochs + 1):
        bar = training.progress(problem.steps_per_epoch, f"{row} x{len(combos)}, epoch {epoch}/{epochs}",
                                not show_progress)
        start, outputs = time.perf_counter(), []
        for x, y in group_batches(problem, seeds, epoch):
            outputs.append(group.train_step(x, y))
            bar.update()
        losses = np.array([np.asarray(loss) for loss, _ in outputs], dtype=np.float64)  # (steps, runs)
        correct = np.sum([np.asarray(c) for _, c in outputs], axis=0)
        elapsed = time.perf_counter() - start
        bar.close()
        metrics = {name: evaluate(group, problem, name) for name in evals}
        for i, result in enumerate(results):
            result["step_loss"] += losses[:, i].tolist()
            record = {"epoch": epoch, "train_loss": _finite(losses[:, i].mean()),
                      "train_acc": float(correct[i]) / (len(losses) * size)}
            for name, (loss, acc) in metrics.items():
                record |= {f"{name}_loss": _finite(loss[i]), f"{name}_acc": float(acc[i])}
            result["epochs"].append(record | {"epoch_time_s": elapsed})
    return results


def train_runs(engine, problem: Problem, row: str, combos, epochs: int, evals=(), show_progress=False,
               on_group=None):
    """Train the ``(lr, seed)`` combos of ``row`` in the groups the engine makes, in order; each
    result also says its group's ``engine``, ``group_size`` and ``compile_s``. ``on_group(combos,
    results)`` is called after each group (the runner writes its records there)."""
    results = []
    while len(results) < len(combos):
        group = engine.start(row, combos[len(results):])
        chunk = combos[len(results):len(results) + group.size]
        out = train_group(group, problem, row, chunk, epochs, evals, show_progress)
        for result in out:
            result |= {"engine": group.engine, "group_size": group.size, "compile_s": group.compile_s}
        if on_group is not None:
            on_group(chunk, out)
        results += out
    return results


# ---------------------------------------------------------------------------------------------------
# the out folder and the records


def dataset_dir(out, dataset) -> Path:
    return Path(out) / dataset


def record_path(out, dataset, phase, row, lr, seed) -> Path:
    return dataset_dir(out, dataset) / "records" / f"{phase}-{row}-lr{lr:g}-seed{seed}.json"


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CompareError(f"{path} is not valid JSON ({err}); delete it (its run is then run again)") from None


def _other_protocol(folder: Path, stored: dict, protocol: Protocol) -> CompareError:
    ours = {**protocol.config(), **({"lr_centres": LR_CENTRES} if "lr_centres" in stored else {})}
    diff = [f"{k} {stored.get(k)!r} there, {ours.get(k)!r} here" for k in sorted(set(ours) | set(stored))
            if stored.get(k) != ours.get(k)]
    return CompareError(
        f"{folder} holds records of another protocol ({'; '.join(diff)}). Nothing was changed: choose another "
        f"-out, run with the settings in {folder}/protocol.json, or delete the folder to start over.")


def open_out_dir(out, protocol: Protocol) -> str:
    """Create ``<out>/<dataset>`` with its protocol.json, or check it against the protocol; the
    folder's protocol hash, which its records carry (an older folder's, if it accepts it)."""
    folder = dataset_dir(out, protocol.dataset)
    path = folder / "protocol.json"
    if path.exists():
        stored = _read_json(path)
        if not protocol.accepts(stored):
            raise _other_protocol(folder, stored.get("config", {}), protocol)
        return stored["hash"]
    if (folder / "records").is_dir() and any((folder / "records").iterdir()):
        raise CompareError(f"{folder} holds records but no protocol.json, so their protocol is unknown; choose "
                           "another -out, or delete the folder to start over")
    else:
        (folder / "records").mkdir(parents=True, exist_ok=True)
        text = json.dumps({"hash": protocol.hash(), "config": protocol.config()}, indent=1) + "\n"
        atomic_write(path, text.encode())
    return protocol.hash()


def read_record(path: Path, protocol_hash: str):
    """The record at ``path``, or None if the run has not finished; another protocol's is an error."""
    if not path.exists():
        return None
    record = _read_json(path)
    if record.get("protocol_hash") != protocol_hash:
        raise CompareError(f"{path} is a record of another protocol (hash {record.get('protocol_hash')}, this "
                           f"folder's is {protocol_hash}); move it away or delete it")
    return record


def write_record(out, protocol: Protocol, protocol_hash: str, phase, row, lr, seed, result) -> Path:
    key, lookahead = parse_row(row)
    record = {"dataset": protocol.dataset, "phase": phase, "row": row, "optimizer": key, "lookahead": lookahead,
              "lr": lr, "lr_centre": LR_CENTRES[key], "seed": seed, "backend": protocol.backend,
              **{k: result[k] for k in ("engine", "group_size", "compile_s", "epochs")},
              "protocol_hash": protocol_hash, "protocol": protocol.config()}
    path = record_path(out, protocol.dataset, phase, row, lr, seed)
    atomic_write(path, (json.dumps(record, indent=1) + "\n").encode())
    return path


def choose_lr(records) -> float:
    """The learning rate of the tune run with the best final validation accuracy; ties go to the
    lower final validation loss, then to the smaller learning rate. Runs that diverged (a null
    loss) come last."""

    def score(record):
        last = record["epochs"][-1]
        finite = last["train_loss"] is not None and last["val_loss"] is not None
        return finite, last["val_acc"], -(last["val_loss"] if finite else math.inf), -record["lr"]

    return max(records, key=score)["lr"]


def run(engine, problem: Problem, out, rows=ROWS, show_progress=True, log=print) -> dict:
    """The whole protocol for ``rows``: tune, choose, final; finished runs are skipped. Returns the
    chosen learning rate of each row."""
    p = problem.protocol
    for row in rows:
        parse_row(row)
    folder_hash = open_out_dir(out, p)
    log(f"{p.dataset}: protocol {folder_hash} ({dataset_dir(out, p.dataset)})")
    chosen = {}

    def finished(phase, row, lr, seed):
        return read_record(record_path(out, p.dataset, phase, row, lr, seed), folder_hash)

    for phase in PHASES:
        combos = {}
        for row in rows:
            if phase == "tune":
                combos[row] = [(lr, p.tune_seed) for lr in p.grid(row)]
            else:
                chosen[row] = choose_lr([finished("tune", row, lr, p.tune_seed) for lr in p.grid(row)])
                combos[row] = [(chosen[row], seed) for seed in p.seeds]
        todo = {row: [c for c in cs if finished(phase, row, *c) is None] for row, cs in combos.items()}
        total = sum(map(len, todo.values()))
        log(f"{p.dataset} {phase}: {total} of {sum(map(len, combos.values()))} runs to do, "
            f"{p.epochs(phase)} epochs each")
        bar = training.progress(total, f"{p.dataset} {phase} runs", not show_progress)
        for row, row_combos in todo.items():

            def write(chunk, results, phase=phase, row=row, bar=bar):
                for (lr, seed), result in zip(chunk, results):
                    write_record(out, p, folder_hash, phase, row, lr, seed, result)
                    last = result["epochs"][-1]
                    scores = "".join(f", {k} {last[k]:.4f}" for k in ("val_acc", "test_acc") if k in last)
                    loss = "diverged" if last["train_loss"] is None else f"{last['train_loss']:.4f}"
                    log(f"  {phase} {row} lr {lr:g} seed {seed}: train loss {loss}{scores}")
                bar.update(len(chunk))

            evals = ("val",) if phase == "tune" else ("test",)
            train_runs(engine, problem, row, row_combos, p.epochs(phase), evals, show_progress, on_group=write)
        bar.close()
    return chosen


SEPARATE_RTOL = 1e-3


def speedup(make_engine, problem: Problem, row: str, combos, epochs: int) -> dict:
    """Time the same runs in one vmapped group (``make_engine(len(combos))``) and one after another
    (``make_engine(1)``): the training steps (``train_s``) apart from the compilation (``compile_s``);
    and compare their per-step losses. In float32 the two part like any two reorderings of the
    same sums: a tiny first difference that training amplifies, so the comparison also gives the
    first step each run's losses differ by more than ``SEPARATE_RTOL`` and its final training loss."""
    out = {}
    for mode, max_group in (("vmap", len(combos)), ("sequential", 1)):
        start = time.perf_counter()
        results = train_runs(make_engine(max_group), problem, row, combos, epochs)
        wall = time.perf_counter() - start
        train_s = sum(sum(e["epoch_time_s"] for e in r["epochs"]) / r["group_size"] for r in results)
        compile_s = sum(r["compile_s"] / r["group_size"] for r in results)  # a group's runs share its compile
        out[mode] = {"wall_s": wall, "train_s": train_s, "compile_s": compile_s,
                     "train_s_per_run_epoch": train_s / (len(combos) * epochs),
                     "final_train_loss": [r["epochs"][-1]["train_loss"] for r in results],
                     "step_loss": [r["step_loss"] for r in results]}
    a, b = (np.array(out[m].pop("step_loss")) for m in ("vmap", "sequential"))
    with np.errstate(invalid="ignore", divide="ignore"):  # diverged runs: NaN and inf losses
        diff = np.abs(a - b) / np.abs(b)
    apart = [np.flatnonzero(d > SEPARATE_RTOL) for d in diff]
    return {**out, "speedup_train": out["sequential"]["train_s"] / out["vmap"]["train_s"],
            "speedup_wall": out["sequential"]["wall_s"] / out["vmap"]["wall_s"],
            "max_rel_loss_diff_per_run": [float(np.nanmax(d, initial=0.0)) for d in diff],
            "max_rel_loss_diff": float(np.nanmax(diff, initial=0.0)),
            "first_step_apart": [int(i[0]) + 1 if len(i) else None for i in apart]}


# ---------------------------------------------------------------------------------------------------
# the report: tables and plots from the records alone


def load_records(out, dataset) -> tuple[dict, list[dict]]:
    """``(protocol.json, records)`` of ``<out>/<dataset>``, every record checked against the protocol."""
    folder = dataset_dir(out, dataset)
    if not (folder / "protocol.json").exists():
        raise CompareError(f"no {folder}/protocol.json: run `python compare.py run -dataset {dataset} -out {out}` "
                           "first, or point -out at the folder that holds the results")
    stored = _read_json(folder / "protocol.json")
    records = [read_record(path, stored["hash"]) for path in sorted((folder / "records").glob("*.json"))]
    return stored, records


def _stat(values, scale=1.0, digits=2):
    """``mean ± sd`` over the seeds (sd with n - 1), saying how many seeds diverged."""
    finite = [v * scale for v in values if v is not None]
    diverged = f" ({len(values) - len(finite)} of {len(values)} diverged)" if len(finite) < len(values) else ""
    if not finite:
        return "diverged"
    if len(finite) == 1:
        return f"{finite[0]:.{digits}f}{diverged}"
    return f"{np.mean(finite):.{digits}f} ± {np.std(finite, ddof=1):.{digits}f}{diverged}"


def summarize(records) -> dict:
    """Per row that has tune records, in the order of :data:`ROWS`: its tune records (by lr), the
    chosen lr and the final records at it (by seed)."""
    rows = {}
    for r in records:
        entry = rows.setdefault(r["row"], {"tune": [], "final": []})
        entry[r["phase"]].append(r)
    rows = {row: rows[row] for row in ROWS if row in rows and rows[row]["tune"]}
    for entry in rows.values():
        entry["tune"].sort(key=lambda r: r["lr"])
        entry["chosen"] = choose_lr(entry["tune"])
        entry["final"] = sorted((r for r in entry["final"] if r["lr"] == entry["chosen"]), key=lambda r: r["seed"])
    return rows


def table(stored: dict, summary: dict) -> str:
    """The Markdown table of a dataset, with the protocol stated above it."""
    c = stored["config"]
    lines = [
        f"### {c['dataset']} ({c['model']}), backend {c['backend']}, {c['dtype']}",
        "",
        f"Protocol {stored['hash']}: learning rate chosen per optimizer by the final validation accuracy of "
        f"{c['tune_epochs']}-epoch runs (seed {c['tune_seed']}) over its usual learning rate times "
        f"{', '.join(f'{f:.3g}' for f in c['lr_factors'])}; validation split {c['num_val']} images held out "
        f"of the training set; {len(c['seeds'])} seeds x {c['final_epochs']} epochs at the chosen rate, "
        f"training on {c['num_train'] or 'all the other'} images, batch {c['batch_size']}, constant learning "
        "rate, other hyperparameters at their defaults. Accuracies in %, mean ± sd over seeds; s/epoch: "
        "training time of one run's epoch (a vmapped group's time divided by its runs).",
        "",
        "| optimizer | lr | val acc (tune) | final test acc | best test acc | final train loss | s/epoch | seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row, entry in summary.items():
        final, chosen = entry["final"], entry["chosen"]
        tune_acc = next(r["epochs"][-1]["val_acc"] for r in entry["tune"] if r["lr"] == chosen)
        per_epoch = [e["epoch_time_s"] / r["group_size"] for r in final for e in r["epochs"]]
        lines.append("| " + " | ".join([
            row, f"{chosen:g}", f"{100 * tune_acc:.2f}",
            _stat([r["epochs"][-1]["test_acc"] for r in final], 100) if final else "-",
            _stat([max(e["test_acc"] for e in r["epochs"]) for r in final], 100) if final else "-",
            _stat([r["epochs"][-1]["train_loss"] for r in final], digits=4) if final else "-",
            f"{np.mean(per_epoch):.3g}" if per_epoch else "-", str(len(final))]) + " |")
    return "\n".join(lines) + "\n"


def report(out, datasets=None, log=print) -> list[Path]:
    """Write ``results.md``, ``curves.png`` and ``lr_sensitivity.png`` into each ``<out>/<dataset>``
    from its records alone; returns the paths written."""
    datasets = datasets or [d for d in DEFAULTS if (dataset_dir(out, d) / "protocol.json").exists()]
    if not datasets:
        raise CompareError(f"no results in {out}: run `python compare.py run -out {out}` first")
    written = []
    for dataset in datasets:
        stored, records = load_records(out, dataset)
        summary = summarize(records)
        folder = dataset_dir(out, dataset)
        text = table(stored, summary)
        atomic_write(folder / "results.md", text.encode())
        curves = {row: e["final"] for row, e in summary.items() if e["final"]}
        plots.curves(folder / "curves.png", f"{dataset} ({stored['config']['model']})", curves)
        plots.lr_sensitivity(folder / "lr_sensitivity.png", f"{dataset} ({stored['config']['model']})",
                             {row: (e["tune"], e["chosen"]) for row, e in summary.items()})
        written += [folder / "results.md", folder / "curves.png", folder / "lr_sensitivity.png"]
        log(text)
    return written
