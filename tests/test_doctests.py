"""Run the examples in the public modules' docstrings (``np`` and ``ropescale`` in scope)."""
import doctest
import importlib
import inspect

import numpy as np
import pytest

import ropescale

MODULES = [
    "ropescale",
    "ropescale._freq",
    "ropescale._rotary",
    "ropescale.rope",
    "ropescale.layers",
    "ropescale.configs",
    "ropescale.positions",
    "ropescale.reference",
    "ropescale.analysis",
    "ropescale._display",
    "ropescale.cli",
    "ropescale.plot",
    "ropescale.parity",
    "ropescale.lint",
    "ropescale.gguf",
    "ropescale.tables",
    "ropescale.precision",
    "ropescale._rerotate",
    "ropescale.eval.prompts",
    "ropescale.eval.stats",
    "ropescale.hf",
    "ropescale.torch",
]
# Modules whose examples need an optional package: they skip without it.
NEEDS = {"ropescale.plot": "matplotlib", "ropescale.hf": "torch", "ropescale.torch": "torch"}

# Modules whose every public function must show an example (the user-facing tools).
EXAMPLES_REQUIRED = ["ropescale.analysis", "ropescale.plot", "ropescale._display"]


def _load(name):
    need = NEEDS.get(name)
    if need is not None:
        pytest.importorskip(need)
        if need == "matplotlib":
            importlib.import_module("matplotlib").use("Agg")
    return importlib.import_module(name)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, capsys):
    module = _load(name)
    # the examples refer to ropescale.analysis / .plot / .cli as attributes
    for sub in ("ropescale.analysis", "ropescale.cli"):
        importlib.import_module(sub)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = finder.find(module, name, globs={"np": np, "ropescale": ropescale})
    # every listed module shows examples: a parametrisation that runs none proves nothing
    examples = sum(len(t.examples) for t in tests)
    assert examples > 0, f"{name}: no docstring examples found"
    failures = []
    attempted = 0
    for test in tests:
        result = runner.run(test, out=failures.append)
        attempted += result.attempted
    assert not failures, "".join(failures)
    assert attempted == examples


@pytest.mark.parametrize("name", EXAMPLES_REQUIRED)
def test_public_functions_have_examples(name):
    module = _load(name)
    missing = []
    for attr in getattr(module, "__all__", []):
        obj = getattr(module, attr)
        if inspect.isfunction(obj) and ">>>" not in (obj.__doc__ or ""):
            missing.append(attr)
    assert not missing, f"{name}: no example in {missing}"
