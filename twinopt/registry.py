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
    # Arguments (torch names) whose torch default 0 is None in JAX: a zero that keeps no state
    # (SGD's momentum buffer), which optax.inject_hyperparams would turn into an array and so into
    # state; it leaves None static (optax.sgd's momentum=None).
    jax_none: tuple = ()
    # State: JAX state field -> torch state entry; whether torch keeps a per-param ``step``; the
    # JAX scalars torch keeps in each param group; how many param-shaped arrays torch_opt keeps
    # with the defaults (the bandwidth figure's minimum bytes).
    state: Mapping = dataclasses.field(default_factory=dict)
    # JAX arguments under which the key steps a Flax model (the scripts', the comparison's) as
    # torch_opt steps its torch twin: Adafactor factors the axes torch's layout has last, which are
    # others in Flax's kernels (twinopt.convert's layouts).
    flax_kwargs: Mapping = dataclasses.field(default_factory=dict)
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
        jax_none=("momentum",), state=_MOMENTUM_STATE, torch_step=False, reference="torch.optim.SGD",
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
        hparams={"lr_decay": 0.0, "initial_accumulator_value": 0.0, "eps": 1e-10}, jax_none=("lr_decay",),
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
        hparams={"alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "centered": False}, jax_none=("momentum",),
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
        fixed=("decoupled_weight_decay",), state=_ADAM_STATE, state_arrays=2, reference="torch.optim.Adam",
        cases={"": ({"lr": 0.01}, _ADAM_GROUP_1)},
        peers=(Peer("optax.adam"),),
    ),
    OptimizerInfo(
        "amsgrad", "adam", "Adam", "amsgrad", lr=1e-3, hparams=_ADAM_HPARAMS, presets={"amsgrad": True},
        fixed=("amsgrad", "decoupled_weight_decay"), state=_ADAM_STATE, state_arrays=3, reference="torch.optim.Adam",
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
    OptimizerInfo(
        "rprop", "rprop", "Rprop", "rprop", lr=1e-2, hparams={"etas": (0.5, 1.2), "step_sizes": (1e-6, 50)},
        state={"prev": "prev", "step_size": "step_size"}, state_arrays=2, reference="torch.optim.Rprop",
        # Random gradients flip sign half the time: group 0's step sizes reach the lower bound, group 1's both.
        cases={"": ({"lr": 0.01}, {"lr": 0.005, "etas": (0.3, 1.5), "step_sizes": (1e-3, 0.02)})},
        peers=(Peer("optax.rprop", rtol=None,
                    note="optax 0.2.8 returns at each step the update of the step before (its first is 0; "
                         "optax PR #1725): 4.2e-2 relative apart after 120 steps at lr 1e-2"),),
        lr_centre=1e-2,  # torch.optim's initial step size (Riedmiller 1994's, full-batch: 0.1)
    ),
    OptimizerInfo(
        "asgd", "asgd", "ASGD", "asgd", lr=1e-2, hparams={"lambd": 1e-4, "alpha": 0.75, "t0": 1e6},
        state={"eta": "eta", "mu": "mu", "ax": "ax"}, state_arrays=1, reference="torch.optim.ASGD",
        # t0 only moves the average (the state's ax), which parity_tests/test_asgd_rprop.py checks.
        cases={"": ({"lr": 0.05}, {"lr": 0.02, "lambd": 0.5, "alpha": 0.6, "t0": 10.0})},
        lr_centre=0.1,  # SGD with a slowly decaying rate (at 0.1, 7% lower after 1e4 steps): plain SGD's centre
    ),
    OptimizerInfo(
        "lamb", "lamb", "LAMB", "lamb", lr=1e-3, hparams={"betas": (0.9, 0.999), "eps": 1e-6},
        state={"mu": "exp_avg", "nu": "exp_avg_sq"}, state_arrays=2, reference="parity_tests.reference.LAMB",
        cases={"": ({"lr": 0.01}, {"lr": 0.005, "betas": (0.8, 0.99), "eps": 1e-4})},
        peers=(Peer("optax.lamb"),
               # Without bias correction, eps shifts by sqrt(1 - b2^t) and decay weighs differently;
               # with eps = 0 and no decay the corrections scale u, which the trust ratio cancels.
               Peer("torch_optimizer.Lamb", ours={"eps": 0.0}, theirs={"eps": 0.0},
                    note="no bias correction and ||p|| clamped at 10; ours with eps = 0 (no decay, ||p|| <= 10)"),
               # Its 1 / (1 - b1^t) outside the ratio leaves the step lr ||p|| / (1 - b1^t): b1 = 0.
               Peer("pytorch_optimizer.Lamb", ours={"b1": 0.0, "eps": 0.0}, theirs={"betas": (0.0, 0.999), "eps": 0.0},
                    foreach=True, note="divides by 1 - b1^t outside the trust ratio, no correction of v, "
                                       "eps added to ||u||, ||p|| clamped at 10; ours with b1 = 0, eps = 0")),
        # Each tensor moves by lr ||p|| a step. The MNIST MLP (4000 images, 2 epochs): test accuracy 0.63 at
        # 1e-3, 0.88 at 1e-2, 0.10 at 1e-1 (Adam at 1e-3: 0.92).
        lr_centre=1e-2,
    ),
    OptimizerInfo(
        "lars", "lars", "LARS", "lars", lr=1e-3,
        hparams={"momentum": 0.9, "trust_coefficient": 1e-3, "eps": 0.0, "nesterov": False, "exclude_vectors": False},
        state={"trace": "momentum_buffer"}, torch_step=False, state_arrays=1, reference="parity_tests.reference.LARS",
        cases={
            "": ({"lr": 1.0}, {"lr": 0.5, "momentum": 0.5, "trust_coefficient": 1e-2, "eps": 1e-3, "nesterov": True,
                              "exclude_vectors": True}),
            "exclude": ({"lr": 1.0, "exclude_vectors": True, "nesterov": True}, {"lr": 2.0, "momentum": 0.8}),
        },
        peers=(Peer("optax.lars", lr=0.3),
               # Its ratio ||p|| / (||g|| + wd ||p||) is ours for weight_decay 0; it adapts matrices only.
               Peer("pytorch_optimizer.LARS", ours={"exclude_vectors": True}, foreach=True, lr=0.3,
                    note="adapts params of 2+ dimensions only, ratio ||p|| / (||g|| + wd ||p||): ours with "
                         "exclude_vectors=True, for weight_decay 0"),
               # Measured 1.2e-2 apart after test_bench's 12 steps at lr 0.3.
               Peer("torch_optimizer.LARS", {"momentum": 0.9, "trust_coefficient": 1e-3, "eps": 0.0}, rtol=None,
                    lr=0.3, note="scales only params with weight decay, by ||p|| / (||g|| + wd ||p|| + eps): plain "
                                 "momentum SGD at weight_decay 0")),
        # With trust_coefficient 1e-3 and momentum 0.9 each tensor moves by ~1e-2 lr ||p|| a step. The MNIST
        # MLP (4000 images, 2 epochs): test accuracy 0.58 at 0.1, 0.87 at 1 and at 10.
        lr_centre=1.0,
    ),
    OptimizerInfo(
        "adabelief", "adabelief", "AdaBelief", "adabelief", lr=1e-3,
        hparams={"betas": (0.9, 0.999), "eps": 1e-16, "amsgrad": False, "weight_decouple": True, "fixed_decay": False,
                 "rectify": True, "degenerated_to_sgd": True},
        state={"mu": "exp_avg", "nu": "exp_avg_var", "nu_max": "max_exp_avg_var"}, state_arrays=2,
        reference="parity_tests.reference.AdaBelief",
        cases={
            # Rectified (the default); group 1 without the SGD steps, with fixed decay and amsgrad
            # (which the rectified step does not read, as in the official code).
            "": ({"lr": 0.01}, {"lr": 0.005, "betas": (0.8, 0.99), "eps": 1e-8, "amsgrad": True, "fixed_decay": True,
                                "degenerated_to_sgd": False}),
            "adam": ({"lr": 0.01, "rectify": False},
                     {"lr": 0.005, "betas": (0.8, 0.99), "eps": 1e-8, "amsgrad": True, "weight_decouple": False,
                      "rectify": False}),
        },
        peers=(
            Peer("optax.adabelief", ours={"rectify": False},
                 note="optax has no rectification (our default) and no weight decay; its eps_root is the eps we add "
                      "to the second moment"),
            Peer("pytorch_optimizer.AdaBelief", {"rectify": True}, note="its default is rectify=False"),
            # An earlier official version: not rectified by default, eps 1e-8, L2 decay (its rectified
            # step and its amsgrad differ from the official 0.2.1's).
            Peer("torch_optimizer.AdaBelief", {"eps": 1e-16, "weight_decouple": True}, ours={"rectify": False},
                 note="its rectified step (threshold rho_t > 4, SGD steps without bias correction) is another one"),
        ),
        lr_centre=1e-3,  # the official README's rate for every task but LSTMs, GANs and RL
    ),
    OptimizerInfo(
        "adan", "adan", "Adan", "adan", lr=1e-3,
        hparams={"betas": (0.98, 0.92, 0.99), "eps": 1e-8, "max_grad_norm": 0.0, "no_prox": False},
        jax_names={"betas": ("b1", "b2", "b3")},
        state={"mu": "exp_avg", "nu": "exp_avg_sq", "mu_diff": "exp_avg_diff", "neg_pre_grad": "neg_pre_grad"},
        state_arrays=4, reference="parity_tests.reference.Adan",
        # max_grad_norm clips the norm of all groups' gradients together in torch (the official code) and of
        # each transformation's own in JAX: parity_tests/test_adan.py checks it on one group.
        cases={"": ({"lr": 0.01}, {"lr": 0.005, "betas": (0.9, 0.8, 0.95), "eps": 1e-6, "no_prox": True})},
        peers=(
            Peer("optax.adan", ours={"b2": 0.5}, theirs={"b2": 0.5, "eps_root": 0.0},
                 note="optax weights the gradient difference by 1 - b2 where the official code weights it by b2 "
                      "(equal at b2 = 0.5), adds eps_root=1e-8 inside the root, and decays as no_prox=True"),
            Peer("pytorch_optimizer.Adan", foreach=True),
        ),
        lr_centre=5e-3,  # the official README: 5-10x AdamW's rate
    ),
    OptimizerInfo(
        "adopt", "adopt", "ADOPT", "adopt", lr=1e-3,
        hparams={"betas": (0.9, 0.9999), "eps": 1e-6, "decouple": False, "unclipped": False},
        # clip_lambda is a function of the step: the command line offers unclipped (clip_lambda=None) instead.
        fixed=("clip_lambda",), jax_names={"clip_lambda": "clip_value_fn"},
        state={"mu": "exp_avg", "nu": "exp_avg_sq"}, state_arrays=2, reference="parity_tests.reference.ADOPT",
        cases={
            "": ({"lr": 0.01}, {"lr": 0.005, "betas": (0.8, 0.99), "eps": 1e-3, "decouple": True, "unclipped": True}),
            "decouple": ({"lr": 0.01, "decouple": True}, {"lr": 0.005, "betas": (0.8, 0.99), "unclipped": True}),
        },
        peers=(Peer("optax.contrib.adopt"),
               # The default clipping step ** 0.25 of the 0-based step, for a library that counts from 1.
               Peer("pytorch_optimizer.ADOPT", {"clip_lambda": lambda step: (step - 1) ** 0.25}, foreach=True,
                    note="calls clip_lambda with the 1-based step; its weight_decouple=True also decays at the "
                         "first step (5.0e-4 apart at lr 1e-2, wd 0.05 over 120 steps)")),
        lr_centre=1e-3,  # the official README's: Adam's, which ADOPT replaces
    ),
    OptimizerInfo(
        "ademamix", "ademamix", "AdEMAMix", "ademamix", lr=1e-3,
        hparams={"betas": (0.9, 0.999, 0.9999), "alpha": 2.0, "beta3_warmup": None, "alpha_warmup": None,
                 "eps": 1e-8},
        jax_names={"betas": ("b1", "b2", "b3")},
        state={"m1": "exp_avg_fast", "m2": "exp_avg_slow", "nu": "exp_avg_sq"}, state_arrays=3,
        reference="parity_tests.reference.AdEMAMix",
        cases={
            "": ({"lr": 0.01}, {"lr": 0.005, "betas": (0.8, 0.99, 0.999), "alpha": 5.0, "beta3_warmup": 50,
                                "alpha_warmup": 80, "eps": 1e-6}),
            # Group 1: b1 = 0 (the official code's fast EMA is then the gradient itself), a beta3 warmup
            # longer than the run.
            "warmup": ({"lr": 0.01, "beta3_warmup": 100, "alpha_warmup": 60},
                       {"lr": 0.005, "betas": (0.0, 0.99, 0.999), "alpha": 8.0, "beta3_warmup": 200,
                        "alpha_warmup": 30}),
        },
        peers=(Peer("optax.contrib.ademamix", {"alpha": 2.0},
                    note="optax's default alpha is 5.0; its b3/alpha schedules take the 0-based count (schedules "
                         "of count + 1.0 give our warmups: parity_tests/test_ademamix_adopt.py)"),
               Peer("pytorch_optimizer.AdEMAMix", {"alpha": 2.0, "weight_decouple": True}, foreach=True,
                    note="alpha 5.0 and L2 decay by default; its one warmup t_alpha_beta3 drops the official "
                         "1e-8 from beta3's (4.6e-6 apart at 50 steps of warmup)")),
        lr_centre=1e-3,  # the official README's
    ),
    OptimizerInfo(
        "adafactor", "adafactor", "Adafactor", "adafactor", lr=1e-2,
        hparams={"beta2_decay": -0.8, "eps": (None, 1e-3), "d": 1.0, "relative_step": True, "scale_parameter": True,
                 "add_eps1": False, "min_dim_size_to_factor": 0},
        state={"row_var": "row_var", "col_var": "col_var", "variance": "variance"},
        flax_kwargs={"layout": "flax"},
        # A matrix keeps its row and column means (O(rows + cols)): no param-shaped array.
        state_arrays=0, reference="torch.optim.Adafactor",
        cases={
            # Group 1's eps1 = 1e-3 clamps the scalar's estimate (its gradients are ~1e-3) and eps2 = 1.5
            # the parameter scale.
            "": ({"lr": 0.01}, {"lr": 0.005, "beta2_decay": -0.6, "eps": (1e-3, 1.5), "d": 2.0}),
            # lr above 1 / sqrt(t): the relative step min(lr, 1 / sqrt(t)) decides from step 5 on (group 0).
            "relative": ({"lr": 0.5, "d": 1.2}, {"lr": 0.05, "beta2_decay": -0.9, "eps": (1e-12, 1e-3)}),
        },
        peers=(
            # Measured 3.6e-9 apart (test_optax_differences' run); 4e-16 with optax's decay in float64.
            Peer("optax.adafactor", ours={"relative_step": False, "add_eps1": True, "eps": (1e-30, 1e-3),
                                          "min_dim_size_to_factor": 128}, rtol=1e-8,
                 note="fixed learning rate, eps 1e-30 added to g*g, factors only where two dims reach 128 (a "
                      "tensor of 3+ dims over its two largest), and rounds 1 - t^-0.8 to float32"),
            # Both cap the relative step at 1e-2 whatever lr is: with it off they take lr, ours min(lr, 1/sqrt(t)).
            Peer("pytorch_optimizer.AdaFactor", {"betas": (None, 0.999), "relative_step": False}, foreach=True,
                 note="relative step capped at 1e-2, not lr; eps1 = 1e-30 added to g*g; momentum (betas[0]) on by "
                      "default; decay scaled by the step size alpha_t, ours by lr (equal at 0)"),
            Peer("torch_optimizer.Adafactor", {"relative_step": False},
                 note="relative step capped at 1e-2, not lr; eps 1e-30 added to g*g; L2 decay scaled by alpha_t; "
                      "fails on params of 3+ dims (its row mean keeps no dim)"),
        ),
        lr_centre=1e-2,  # the paper's cap of the relative step (torch.optim's default lr)
    ),
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
