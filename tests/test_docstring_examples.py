"""Every ``>>>`` example in the package's docstrings runs and prints what it says; examples that
need a loaded model are written as illustrations (a ``::`` code block), which doctest skips."""

import doctest
import importlib
import pkgutil

import pytest

import focus_modules
import focus_modules.kernels

# Modules whose import runs something (a command-line entry point).
ENTRY_POINTS = ("__main__",)
# kernels/ is installed as focus_modules.kernels from its own folder, so it is walked on its own.
MODULES = sorted(
    {
        info.name
        for package in (focus_modules, focus_modules.kernels)
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
        if info.name.rsplit(".", 1)[-1] not in ENTRY_POINTS
    }
    | {"focus_modules", "focus_modules.kernels"}
)
# The ops and modules whose examples run on small tensors; a test that finds none of them fails.
RUNNABLE = (
    "focus_modules.modules.existence",
    "focus_modules.modules.relevance_map",
    "focus_modules.modules.roi_proposer",
    "focus_modules.ops.propose_rois",
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    results = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert results.failed == 0, f"{results.failed} of {results.attempted} docstring example lines failed in {name}"
    if name in RUNNABLE:
        assert results.attempted > 0, f"{name} lost its runnable example"


def test_every_runnable_module_is_walked():
    assert set(RUNNABLE) <= set(MODULES) and "focus_modules.kernels.relevance_map" in MODULES
