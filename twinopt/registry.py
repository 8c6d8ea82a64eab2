"""Every fact about every optimizer key, in one table: :data:`OPTIM_DB`.

In the spirit of torch's ``OptimizerInfo`` / ``optim_db``, one :class:`OptimizerInfo` per key
holds what the rest of the project needs to know about an optimizer: where its two
implementations live, its hyperparameters (names, defaults and their translation between the
backends), the settings the key presets, the layout of its state in both backends (conversion and
checkpoints), the reference its trajectory is tested against and at what tolerance, the
configurations the parity suite runs, the other implementations it is timed against and shown
equal to, and the learning rate the comparison centres its grid on. Everything else (the backends'
``OPTIMIZERS``, the command-line flags, the conversion tables, the benchmark and comparison rows,
the parity cases) is derived from it; nothing else lists optimizer keys.

Adding an optimizer: write ``jax_opt/<module>.py`` and ``torch_opt/<module>.py``, add one
:class:`OptimizerInfo` below, and, where neither torch.optim nor optax has the algorithm, a NumPy
transcription of the official code in ``parity_tests/reference.py`` (docs/development.md).

This module names the implementations by dotted paths (strings): it imports neither backend.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from .hparams import check_betas

# SPEC.md: float64 trajectories agree to 1e-12 relative per step; float32 to the 1e-5 the parity
# report measured (at most 3.6e-6, AdamW's decay written as p * (1 - lr wd) in torch and as
# p - lr (d + wd p) in JAX), which leaves a factor of ~3 for other CPUs' rounding.
TOLERANCE = {"float64": 1e-12, "float32": 1e-5}

# The peers' libraries whose pip name is not their module's.
DISTRIBUTIONS = {"torch_optimizer": "torch-optimizer", "lion_pytorch": "lion-pytorch"}

# torch name -> JAX name of the arguments every key shares; ``("b1", "b2")``: a pair split in two.
JAX_NAMES = {"lr": "learning_rate", "betas": ("b1", "b2")}


@dataclasses.dataclass(frozen=True)
class Peer:
    """Another implementation of a key's algorithm: timed against ours in the benchmarks and shown
    to compute our updates, under the settings given, in the tests.

    ``target``: its dotted path (``"optax.nadam"``, ``"torch_optimizer.AdaBound"``), called with
    the learning rate and ``kwargs`` (its own argument names). ``ours`` / ``theirs``: the arguments
    (JAX names for ours) under which the two compute the same updates; both empty means they do with
    the defaults. ``rtol``: the agreement shown (``None``: another algorithm, timed only).
    ``foreach``: the peer also has a ``foreach=True`` path, timed separately. ``lr``: the learning
    rate the agreement is shown at. ``note``: how the two differ.
    """

    target: str
    kwargs: Mapping = dataclasses.field(default_factory=dict)
    ours: Mapping = dataclasses.field(default_factory=dict)
    theirs: Mapping = dataclasses.field(default_factory=dict)
    rtol: float | None = 1e-12
    foreach: bool = False
    lr: float = 1e-2
    note: str = ""

    @property
    def library(self) -> str:
        """The module the peer comes from: ``optax``, ``torch_optimizer``, ..."""
        return self.target.split(".")[0]

    @property
    def label(self) -> str:
        """The peer's library as pip names it (the benchmark tables' label)."""
        return DISTRIBUTIONS.get(self.library, self.library)


@dataclasses.dataclass(frozen=True)
class OptimizerInfo:
    """One optimizer key. Argument names are torch's (``lr``, ``betas``) unless said otherwise."""

    key: str
    # ``jax_opt.<module>.<jax>`` and ``torch_opt.<module>.<torch>``.
    module: str
    torch: str
    jax: str
    # Defaults of the key (presets included) for lr, weight_decay and ``hparams``: the other
    # arguments the key takes, in signature order. The command line offers exactly these.
    lr: float
    hparams: Mapping
    weight_decay: float = 0.0
    # What the key fixes on top of the class (``momentum`` is SGD with momentum 0.9). The JAX side
    # applies them to its factory when the factory is the module's own (``sgd``); a key with a
    # factory of its own (``amsgrad``) has them built in.
    presets: Mapping = dataclasses.field(default_factory=dict)
    # The class's arguments the key does not offer: its presets, and what they imply (Nesterov
    # needs dampening 0; plain SGD and momentum are not Nesterov).
    fixed: tuple = ()
    # torch name -> JAX name where they differ beyond JAX_NAMES (None: the same name in both).
    jax_names: Mapping = dataclasses.field(default_factory=dict)
    # State: JAX state field -> torch state entry; whether torch keeps a per-param ``step``; the
    # JAX scalars torch keeps in each param group; how many param-shaped arrays torch_opt keeps
    # with the defaults (the bandwidth figure's minimum bytes).
    state: Mapping = dataclasses.field(default_factory=dict)
    torch_step: bool = True
    group_state: tuple = ()
    state_arrays: int = 0
    # The reference that fixes the arithmetic: ``torch.optim.<Class>`` or a NumPy transcription of
    # the official code, ``parity_tests.reference.<Class>``; ``reference_init``: state entries the
    # reference fills from each group's hyperparameter (torch.optim.Adagrad fills every accumulator
    # from the constructor's value, ours from the group's).
    reference: str = ""
    reference_init: Mapping = dataclasses.field(default_factory=dict)
    tolerance: Mapping = dataclasses.field(default_factory=lambda: dict(TOLERANCE))
    # The parity suite's configurations: case name -> (group 0's, group 1's hyperparameters); the
    # case "" is named after the key, another one ``<key>-<name>``. Group 1 changes every
    # hyperparameter the algorithm has, so that a mix-up between groups shows.
    cases: Mapping = dataclasses.field(default_factory=dict)
    peers: tuple = ()
    # The centre of the comparison's learning-rate grid: the rate the key is usually run with.
    lr_centre: float = 1e-3

    @property
    def torch_path(self) -> str:
        return f"torch_opt.{self.module}.{self.torch}"

    @property
    def jax_path(self) -> str:
        return f"jax_opt.{self.module}.{self.jax}"

    @property
    def args(self) -> tuple:
        """Every argument the key takes on the command line, torch names: lr, weight_decay, hparams."""
        return ("lr", "weight_decay", *self.hparams)

    @property
    def defaults(self) -> dict:
        return {"lr": self.lr, "weight_decay": self.weight_decay, **self.hparams}

    @property
    def jax_presets(self) -> dict:
        return to_jax_kwargs(self.key, self.presets) if self.jax == self.module else {}

    @property
    def torch_reference(self) -> bool:
        return self.reference.startswith("torch.optim.")

    def peers_of(self, backend: str) -> tuple:
        """The peers of one backend: optax's for ``"jax"``, the others for ``"torch"``."""
        return tuple(p for p in self.peers if (p.library == "optax") == (backend == "jax"))


_ADAM_STATE = {"mu": "exp_avg", "nu": "exp_avg_sq", "nu_max": "max_exp_avg_sq"}
_MOMENTUM_STATE = {"momentum_buffer": "momentum_buffer"}
_ADAM_HPARAMS = {"betas": (0.9, 0.999), "eps": 1e-8}
_ADAM_GROUP_1 = {"lr": 0.005, "betas": (0.8, 0.99), "eps": 1e-6}
_ADABOUND_HPARAMS = {"betas": (0.9, 0.999), "final_lr": 0.1, "gamma": 1e-3, "eps": 1e-8}
_ADABOUND_CASE = {"": ({"lr": 0.01}, {**_ADAM_GROUP_1, "final_lr": 0.05, "gamma": 1e-2})}


def _adabound_peers(amsbound: bool) -> tuple:
    return (
        Peer("torch_optimizer.AdaBound", {"amsbound": amsbound}),
        # pytorch_optimizer adds 1e-15 to the second moment inside the root (exp_avg_sq_eps).
        Peer("pytorch_optimizer.AdaBound", {"ams_bound": amsbound}, rtol=1e-6, foreach=True,
             note="adds 1e-15 to the second moment inside the root"),
    )


OPTIM_DB = (
    OptimizerInfo(
        "sgd", "sgd", "SGD", "sgd", lr=1e-3, hparams={"momentum": 0.0, "dampening": 0.0}, fixed=("nesterov",),
        state=_MOMENTUM_STATE, torch_step=False, reference="torch.optim.SGD",
        cases={"": ({"lr": 0.05}, {"lr": 0.01})},
        peers=(Peer("optax.sgd"),),
        lr_centre=0.1,  # plain SGD needs a larger step than torch's default 1e-3
    ),
    OptimizerInfo(
        "momentum", "sgd", "SGD", "sgd", lr=1e-3, hparams={"momentum": 0.9, "dampening": 0.0},
        presets={"momentum": 0.9}, fixed=("nesterov",), state=_MOMENTUM_STATE, torch_step=False, state_arrays=1,
        reference="torch.optim.SGD",
        cases={"": ({"lr": 0.05}, {"lr": 0.01, "momentum": 0.5, "dampening": 0.3})},
        peers=(Peer("optax.sgd", {"momentum": 0.9}),),
        lr_centre=0.01,  # momentum 0.9 multiplies the step by 10
    ),
    OptimizerInfo(
        "nesterov", "sgd", "SGD", "sgd", lr=1e-3, hparams={"momentum": 0.9},
        presets={"momentum": 0.9, "nesterov": True}, fixed=("nesterov", "dampening"), state=_MOMENTUM_STATE,
        torch_step=False, state_arrays=1, reference="torch.optim.SGD",
        cases={"": ({"lr": 0.05}, {"lr": 0.02, "momentum": 0.7})},
        peers=(Peer("optax.sgd", {"momentum": 0.9, "nesterov": True}),),
        lr_centre=0.01,
    ),
    OptimizerInfo(
        "adagrad", "adagrad", "Adagrad", "adagrad", lr=1e-2,
        hparams={"lr_decay": 0.0, "initial_accumulator_value": 0.0, "eps": 1e-10},
        state={"sum": "sum"}, state_arrays=1,
        reference="torch.optim.Adagrad", reference_init={"sum": "initial_accumulator_value"},
        cases={"": ({"lr": 0.1}, {"lr": 0.05, "lr_decay": 0.01, "initial_accumulator_value": 0.1, "eps": 1e-6})},
        peers=(Peer("optax.adagrad", ours={"initial_accumulator_value": 0.1, "eps": 0.0},
                    theirs={"initial_accumulator_value": 0.1, "eps": 0.0},
                    note="optax adds eps inside the root and starts the accumulator at 0.1"),),
        lr_centre=0.01,
    ),
    OptimizerInfo(
        "adadelta", "adadelta", "Adadelta", "adadelta", lr=1.0, hparams={"rho": 0.9, "eps": 1e-6},
        state={"square_avg": "square_avg", "acc_delta": "acc_delta"}, state_arrays=2,
        reference="torch.optim.Adadelta",
        cases={"": ({"lr": 1.0}, {"lr": 0.5, "rho": 0.8, "eps": 1e-5})},
        peers=(Peer("optax.adadelta", lr=1.0),),
        lr_centre=1.0,
    ),
    OptimizerInfo(
        "rmsprop", "rmsprop", "RMSprop", "rmsprop", lr=1e-2,
        hparams={"alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "centered": False},
        state={"square_avg": "square_avg", "momentum_buffer": "momentum_buffer", "grad_avg": "grad_avg"},
        state_arrays=1, reference="torch.optim.RMSprop",
        cases={
            "": ({"lr": 0.01}, {"lr": 0.005, "alpha": 0.9, "eps": 1e-6}),
            "momentum": ({"lr": 0.01, "momentum": 0.9}, {"lr": 0.005, "alpha": 0.9, "momentum": 0.5}),
            "centered": ({"lr": 0.01, "centered": True},
                         {"lr": 0.005, "alpha": 0.9, "momentum": 0.8, "centered": True}),
        },
        peers=(Peer("optax.rmsprop", ours={"alpha": 0.9}, theirs={"decay": 0.9, "eps_in_sqrt": False},
                    note="optax adds eps inside the root by default and decays by 0.9 (torch: alpha 0.99)"),),
        lr_centre=1e-3,  # Keras' default; torch's 1e-2 often diverges
    ),
    OptimizerInfo(
        "adam", "adam", "Adam", "adam", lr=1e-3, hparams={**_ADAM_HPARAMS, "amsgrad": False},
        state=_ADAM_STATE, state_arrays=2, reference="torch.optim.Adam",
        cases={"": ({"lr": 0.01}, _ADAM_GROUP_1)},
        peers=(Peer("optax.adam"),),
    ),
    OptimizerInfo(
        "amsgrad", "adam", "Adam", "amsgrad", lr=1e-3, hparams=_ADAM_HPARAMS, presets={"amsgrad": True},
        fixed=("amsgrad",), state=_ADAM_STATE, state_arrays=3, reference="torch.optim.Adam",
        cases={"": ({"lr": 0.01}, _ADAM_GROUP_1)},
        peers=(Peer("optax.amsgrad", ours={"b2": 0.0}, theirs={"b2": 0.0},
                    note="optax takes the max of the bias-corrected second moment; equal when b2 = 0"),),
    ),
    OptimizerInfo(
        "adamax", "adamax", "Adamax", "adamax", lr=2e-3, hparams=_ADAM_HPARAMS,
        state={"mu": "exp_avg", "nu": "exp_inf"}, state_arrays=2, reference="torch.optim.Adamax",
        cases={"": ({"lr": 0.01}, _ADAM_GROUP_1)},
        peers=(Peer("optax.adamax"),),
        lr_centre=2e-3,
    ),
    OptimizerInfo(
        "adamw", "adamw", "AdamW", "adamw", lr=1e-3, weight_decay=1e-2, hparams={**_ADAM_HPARAMS, "amsgrad": False},
        state=_ADAM_STATE, state_arrays=2, reference="torch.optim.AdamW",
        cases={"": ({"lr": 0.01}, {**_ADAM_GROUP_1, "amsgrad": True})},
        peers=(Peer("optax.adamw", {"weight_decay": 1e-2}),),
    ),
    OptimizerInfo(
        "nadam", "nadam", "NAdam", "nadam", lr=2e-3,
        hparams={**_ADAM_HPARAMS, "momentum_decay": 4e-3, "decoupled_weight_decay": False},
        state={"mu_product": "mu_product", "mu": "exp_avg", "nu": "exp_avg_sq"}, state_arrays=2,
        reference="torch.optim.NAdam",
        cases={
            "": ({"lr": 0.01}, {**_ADAM_GROUP_1, "momentum_decay": 1e-2}),
            "decoupled": ({"lr": 0.01, "decoupled_weight_decay": True},
                          {"lr": 0.005, "betas": (0.8, 0.99), "decoupled_weight_decay": True}),
        },
        # torch's momentum schedule b1 (1 - 0.5 * 0.96^(t * momentum_decay)) tends to b1 as
        # momentum_decay grows; optax keeps mu = b1.
        peers=(Peer("optax.nadam", ours={"momentum_decay": 1e4},
                    note="optax keeps the momentum at b1; torch schedules it with momentum_decay"),),
        lr_centre=2e-3,
    ),
    OptimizerInfo(
        "radam", "radam", "RAdam", "radam", lr=1e-3, hparams={**_ADAM_HPARAMS, "decoupled_weight_decay": False},
        state={"mu": "exp_avg", "nu": "exp_avg_sq"}, state_arrays=2, reference="torch.optim.RAdam",
        cases={
            "": ({"lr": 0.01}, _ADAM_GROUP_1),
            "decoupled": ({"lr": 0.01, "decoupled_weight_decay": True},
                          {"lr": 0.005, "betas": (0.8, 0.99), "decoupled_weight_decay": True}),
        },
        peers=(Peer("optax.radam", ours={"eps": 0.0}, theirs={"eps": 0.0},
                    note="optax adds eps to sqrt(v_hat), torch to sqrt(v)"),),
    ),
    OptimizerInfo(
        "adabound", "adabound", "AdaBound", "adabound", lr=1e-3, hparams={**_ADABOUND_HPARAMS, "amsbound": False},
        state=_ADAM_STATE, group_state=("base_lr",), state_arrays=2, reference="parity_tests.reference.AdaBound",
        cases=_ADABOUND_CASE, peers=_adabound_peers(False),
    ),
    OptimizerInfo(
        "amsbound", "adabound", "AdaBound", "amsbound", lr=1e-3, hparams=_ADABOUND_HPARAMS,
        presets={"amsbound": True}, fixed=("amsbound",), state=_ADAM_STATE, group_state=("base_lr",), state_arrays=3,
        reference="parity_tests.reference.AdaBound", cases=_ADABOUND_CASE, peers=_adabound_peers(True),
    ),
    OptimizerInfo(
        "aggmo", "aggmo", "AggMo", "aggmo", lr=0.1, hparams={"betas": (0.0, 0.9, 0.99)},
        jax_names={"betas": "betas"}, state={"trace": "momentum_buffer"}, torch_step=False, state_arrays=3,
        reference="parity_tests.reference.AggMo",
        cases={"": ({"lr": 0.05}, {"lr": 0.02, "betas": (0.0, 0.5, 0.9, 0.95)})},
        peers=(Peer("torch_optimizer.AggMo"), Peer("pytorch_optimizer.AggMo", foreach=True)),
        lr_centre=0.01,  # betas (0, 0.9, 0.99) multiply the step by about 37
    ),
    OptimizerInfo(
        "lion", "lion", "Lion", "lion", lr=1e-4, hparams={"betas": (0.9, 0.99)},
        state={"mu": "exp_avg"}, torch_step=False, state_arrays=1, reference="parity_tests.reference.Lion",
        cases={"": ({"lr": 0.01}, {"lr": 0.005, "betas": (0.8, 0.95)})},
        peers=(Peer("optax.lion", {"weight_decay": 0.0}),  # optax's default decay is 1e-3, the official code's 0
               Peer("lion_pytorch.Lion"), Peer("pytorch_optimizer.Lion", foreach=True)),
        # Every coordinate moves by lr a step: 3-10x below AdamW's rate (Chen et al. 2023, Section 5).
        lr_centre=1e-4,
    ),
    # ANCHOR issue 17: rprop, asgd
    # ANCHOR issue 17: lamb, lars
    # ANCHOR issue 17: adabelief, adan
    # ANCHOR issue 17: adopt, ademamix
    # ANCHOR issue 17: adafactor
)

INFO = {info.key: info for info in OPTIM_DB}
KEYS = tuple(INFO)

# The rows of the comparisons (benchmarks, results, trajectories): every key, and Lookahead
# around SGD momentum and around Adam.
LOOKAHEAD_SUFFIX = "+lookahead"
# Lookahead's defaults in both backends and every script (Zhang et al. 2019).
LOOKAHEAD_K, LOOKAHEAD_ALPHA = 5, 0.5
LOOKAHEAD_ROWS = ("momentum", "adam")
ROWS = KEYS + tuple(key + LOOKAHEAD_SUFFIX for key in LOOKAHEAD_ROWS)
# Lookahead's reference and bench peers (it wraps any key, so it has no entry of its own).
LOOKAHEAD_REFERENCE = "parity_tests.reference.Lookahead"
LOOKAHEAD_PEERS = (
    Peer("optax.lookahead"),
    # torch-optimizer copies the slow weights at its first sync (after k steps), not at the start
    # as in the paper: its first sync changes nothing, so it computes other steps.
    Peer("torch_optimizer.Lookahead", rtol=None, note="copies the slow weights at the first sync, not at the start"),
    Peer("pytorch_optimizer.Lookahead"),
)

# Every hyperparameter some key takes (torch names), with a default that shows its type: the
# command line's flags.
HPARAMS = {name: value for info in OPTIM_DB for name, value in info.hparams.items()}


def info(key: str) -> OptimizerInfo:
    """The registry entry of ``key``; an unknown key raises ValueError listing the known ones."""
    try:
        return INFO[key]
    except KeyError:
        raise ValueError(f"unknown optimizer {key!r}; choose from: {', '.join(KEYS)}") from None


def split_row(row: str) -> tuple[str, bool]:
    """``(key, lookahead)`` of a row: ``"adam+lookahead"`` -> ``("adam", True)``."""
    if row not in ROWS:
        raise ValueError(f"unknown optimizer row {row!r}; choose from: {', '.join(ROWS)}")
    return row.removesuffix(LOOKAHEAD_SUFFIX), row.endswith(LOOKAHEAD_SUFFIX)


def case_name(key: str, name: str) -> str:
    return f"{key}-{name}" if name else key


# Every parity case: case id -> (key, group 0's hyperparameters, group 1's).
CASES = {case_name(i.key, name): (i.key, *groups) for i in OPTIM_DB for name, groups in i.cases.items()}


def jax_name(key: str, name: str):
    """The JAX name of torch argument ``name`` of ``key`` (a tuple: a pair split in two)."""
    return INFO[key].jax_names.get(name) or JAX_NAMES.get(name, name)


def to_jax_kwargs(key: str, torch_kwargs: Mapping) -> dict:
    """Translate torch_opt keyword arguments of optimizer ``key`` into jax_opt ones.

    ``lr`` becomes ``learning_rate`` and ``betas=(b1, b2)`` becomes ``b1=..., b2=...``, except
    where the key keeps the name (AggMo's ``betas`` is a tuple of any length in both backends).
    """
    out = {}
    for name, value in torch_kwargs.items():
        target = jax_name(key, name)
        if isinstance(target, tuple):
            check_betas(name, value, length=len(target))
            out.update(zip(target, value))
        else:
            out[target] = value
    return out
