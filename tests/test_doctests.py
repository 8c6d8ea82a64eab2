"""The docstring examples of both libraries run, so that they cannot rot (examples that need a
model or data outside the docstring are marked ``+SKIP``)."""

import doctest
import importlib
import pkgutil

import pytest

import jax_opt
import torch_opt

MODULES = [f"{package.__name__}.{m.name}" for package in (jax_opt, torch_opt)
           for m in pkgutil.iter_modules(package.__path__)]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
