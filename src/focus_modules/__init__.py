"""focus_modules: FOCUS (NeurIPS 2025) as reusable PyTorch components.

Public names are imported lazily so that ``import focus_modules`` stays cheap and works on a
machine without a GPU, triton or transformers' heavy model code.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "FocusConfig": "focus_modules.config",
    "RelevanceMap": "focus_modules.modules.relevance_map",
    "RoiProposer": "focus_modules.modules.roi_proposer",
    "RoiSet": "focus_modules.ops.propose_rois",
    "ExistenceScorer": "focus_modules.modules.existence",
    "ValueCapture": "focus_modules.modules.value_capture",
    "FocusWrapper": "focus_modules.wrapper",
    "FocusResult": "focus_modules.results",
    "Roi": "focus_modules.results",
    "ModelAdapter": "focus_modules.adapters",
    "register_adapter": "focus_modules.adapters",
    "load_dataset": "focus_modules.eval",
    "run_eval": "focus_modules.eval",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'focus_modules' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
