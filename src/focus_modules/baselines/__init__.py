"""Visual-search baselines answered in FOCUS's harness: ZoomEye and ViCrop (rel-att, grad-att).

Each is a :class:`SearchMethod`: it searches a question's image through the same
:class:`~focus_modules.adapters.ModelAdapter` FOCUS uses and returns the view the final answer is
built from; :class:`~focus_modules.wrapper.FocusWrapper` then answers on that view with the same
step VI and the same forward-pass accounting as FOCUS and vanilla
(``FocusWrapper.answer(..., method="zoomeye")``).
"""

from __future__ import annotations

from importlib import import_module

from focus_modules.baselines.base import SearchMethod, SearchTask

# method name (as in focus_modules.config.METHODS) -> "module:class" of its SearchMethod.
SEARCH_METHODS = {
    "zoomeye": "focus_modules.baselines.zoomeye:ZoomEye",
    "vicrop-rel": "focus_modules.baselines.vicrop:RelAttViCrop",
    "vicrop-grad": "focus_modules.baselines.vicrop:GradAttViCrop",
}


def search_method(name: str) -> type[SearchMethod]:
    """The :class:`SearchMethod` class of a baseline method name (imported on first use)."""
    if name not in SEARCH_METHODS:
        raise ValueError(f"unknown search method {name!r}; expected one of {tuple(SEARCH_METHODS)}")
    module, cls = SEARCH_METHODS[name].split(":")
    return getattr(import_module(module), cls)


__all__ = ["SEARCH_METHODS", "SearchMethod", "SearchTask", "search_method"]
