"""The shared command line: flags, checks and the optimizer hyperparameters each key takes."""

import inspect

import pytest

import jax_opt
import torch_opt
from twinopt import cli
from twinopt.registry import INFO, KEYS, to_jax_kwargs
from twinopt.schedules import lr_factor

@pytest.mark.parametrize("key", KEYS)
def test_key_args_match_both_backends(key):
    paths = {"params", "foreach", "maximize", "fused", "capturable", "differentiable"}
    torch_args = set(inspect.signature(torch_opt.OPTIMIZERS[key]).parameters) - paths
    jax_args = set(inspect.signature(jax_opt.OPTIMIZERS[key]).parameters)
    offered = set(INFO[key].args)
    assert offered <= torch_args
    assert torch_args - offered == set(INFO[key].fixed)
    assert set(to_jax_kwargs(key, dict.fromkeys(offered - {"betas"}, 0.5))) <= jax_args
    assert set(INFO[key].presets) <= torch_args


@pytest.mark.parametrize("key", KEYS)
def test_registry_defaults_are_both_backends_defaults(key):
    """The registry's defaults of a key (presets included) are its torch class's and its JAX
    factory's, translated."""
    defaults = INFO[key].defaults
    torch_params = inspect.signature(torch_opt.OPTIMIZERS[key]).parameters
    assert {name: torch_params[name].default for name in defaults} == defaults
    jax_params = inspect.signature(jax_opt.OPTIMIZERS[key]).parameters
    jax_defaults = to_jax_kwargs(key, {name: None if name in INFO[key].jax_none and value == 0 else value
                                       for name, value in defaults.items()})
    assert {name: jax_params[name].default for name in jax_defaults} == jax_defaults


def test_flags_take_one_dash_or_two():
    assert cli.parse_args(["--num_epochs", "3", "--optimizer", "sgd", "--momentum", "0.5", "--lookahead"],
                          "jax").optimizer_kwargs == {"momentum": 0.5}
    args = cli.parse_args(["-num_epochs", "3", "--dataset=cifar", "-betas", "0.8,0.9"], "torch")
    assert (args.num_epochs, args.dataset, args.optimizer_kwargs) == (3, "cifar", {"betas": (0.8, 0.9)})


def test_original_flags_parse():
    args = cli.parse_args("-num_epochs 100 -dataset cifar -num_train 16384".split(), "torch")
    assert (args.num_epochs, args.dataset, args.num_train) == (100, "cifar", 16384)
    assert args.out_dir == "runs/cifar-adam-torch-seed0"


def test_hyperparameters_from_the_command_line():
    args = cli.parse_args("-optimizer adabound -lr 0.01 -betas 0.8,0.99 -final_lr 0.05 -amsbound".split(), "jax")
    assert args.optimizer_kwargs == {"lr": 0.01, "betas": (0.8, 0.99), "final_lr": 0.05, "amsbound": True}
    assert to_jax_kwargs("adabound", args.optimizer_kwargs) == {
        "learning_rate": 0.01, "b1": 0.8, "b2": 0.99, "final_lr": 0.05, "amsbound": True}
    aggmo = cli.parse_args("-optimizer aggmo -betas 0,0.5,0.9,0.99".split(), "torch")
    assert to_jax_kwargs("aggmo", aggmo.optimizer_kwargs) == {"betas": (0.0, 0.5, 0.9, 0.99)}


def test_a_hyperparameter_the_optimizer_lacks_is_refused(capsys):
    with pytest.raises(SystemExit, match="-optimizer sgd has no hyperparameter -final_lr; it takes -lr, "
                                         "-weight_decay, -momentum, -dampening"):
        cli.parse_args("-optimizer sgd -final_lr 0.1".split(), "torch")


@pytest.mark.parametrize("argv, message", [
    ("-optimizer adamm", "unknown -optimizer 'adamm'; valid: sgd, momentum"),
    ("-num_train 0", "-num_train must be >= 1"),
    ("-batch_size 0", "-batch_size must be >= 1"),
    ("-betas 0.9,x", "expected comma-separated numbers"),
    ("-cnn_channels 1,2", "-cnn_channels takes 3 values"),
    ("-dataset svhn", "invalid choice: 'svhn'"),
])
def test_bad_flags_are_refused_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(argv.split(), "jax")
    assert message in capsys.readouterr().err


def test_schedules():
    assert [lr_factor("step", s, 100) for s in (0, 49, 50, 74, 75, 99)] == [1, 1, 0.1, 0.1, 0.1**2, 0.1**2]
    assert lr_factor("cosine", 0, 100) == 1.0 and abs(lr_factor("cosine", 100, 100)) < 1e-16
    assert lr_factor("cosine", 150, 100) == lr_factor("cosine", 100, 100)
    with pytest.raises(ValueError, match="Unknown schedule 'linear'"):
        lr_factor("linear", 0, 10)


@pytest.mark.parametrize("flag", ["-shard_optimizer", "-distributed"])
def test_jax_scale_out_flags_are_refused_by_the_torch_script(flag, capsys):
    with pytest.raises(SystemExit):
        cli.parse_args([flag], "torch")
    assert "train_jax.py flags; train_torch.py is distributed by launching it with torchrun" in capsys.readouterr().err


def test_torch_batch_must_split_over_the_processes(monkeypatch):
    from torch_train import train as train_torch

    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(SystemExit, match=r"-batch_size 128 does not split over 3 processes; choose a multiple of 3"):
        train_torch.main(["-out_dir", "never-created"])


def test_flags_typed_by_every_keys_defaults():
    """-eps is one number for most keys and Adafactor's pair (None: eps1's default); a boolean whose
    default is True is switched off by -no_<name>; an integer's flag parses an integer."""
    args = cli.parse_args("-optimizer adafactor -eps None,1e-3 -no_relative_step -min_dim_size_to_factor 128".split(),
                          "torch")
    assert args.optimizer_kwargs == {"eps": (None, 1e-3), "relative_step": False, "min_dim_size_to_factor": 128}
    jax_args = cli.parse_args("-optimizer adafactor -eps 1e-30,1e-3 -add_eps1".split(), "jax")
    assert to_jax_kwargs("adafactor", jax_args.optimizer_kwargs) == {"eps": (1e-30, 1e-3), "add_eps1": True}
    assert cli.parse_args("-optimizer adam -eps 1e-6".split(), "jax").optimizer_kwargs == {"eps": 1e-6}
    with pytest.raises(SystemExit, match=r"-optimizer adam: Invalid eps: 1e-06,0.001; it must be one number"):
        cli.parse_args("-optimizer adam -eps 1e-6,1e-3".split(), "jax")
