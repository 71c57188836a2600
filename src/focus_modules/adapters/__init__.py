"""Model adapters: one per MLLM family, picked from the model's class.

Illustration (needs a loaded model; not run as a doctest)::

    from focus_modules.adapters import adapter_for, register_adapter
    adapter = adapter_for(model, processor)          # LlavaAdapter for LlavaForConditionalGeneration
    adapter = adapter_for(model, processor, max_pixels=1024 * 28 * 28)  # options of the adapter
    register_adapter("MyVlmForConditionalGeneration", MyAdapter)  # a family of your own
"""

from __future__ import annotations

from torch import nn

from focus_modules.adapters.base import Batch, Encoding, FinalView, ModelAdapter, Selection
from focus_modules.adapters.gemma3 import Gemma3Adapter
from focus_modules.adapters.internvl import InternVLAdapter
from focus_modules.adapters.llava import LlavaAdapter
from focus_modules.adapters.llava_onevision import LlavaOnevisionAdapter
from focus_modules.adapters.multi_image import MultiImageAdapter
from focus_modules.adapters.qwen2_5_vl import Qwen2_5_VLAdapter
from focus_modules.adapters.qwen3_vl import Qwen3VLAdapter

# model class name -> adapter class
_REGISTRY: dict[str, type[ModelAdapter]] = {}


def register_adapter(model_class: str | type, adapter_cls: type[ModelAdapter] | None = None):
    """Serve ``model_class`` (a class or its name; subclasses match too) with ``adapter_cls``.
    Usable as a decorator: ``@register_adapter("MyVlmForConditionalGeneration")``. A later
    registration for the same class replaces the earlier one."""
    name = model_class if isinstance(model_class, str) else model_class.__name__

    def register(cls: type[ModelAdapter]) -> type[ModelAdapter]:
        if not (isinstance(cls, type) and issubclass(cls, ModelAdapter)):
            raise TypeError(f"adapter for {name} must be a ModelAdapter subclass, got {cls!r}")
        _REGISTRY[name] = cls
        return cls

    return register if adapter_cls is None else register(adapter_cls)


def supported_models() -> dict[str, str]:
    """Registered model class names and their family."""
    return {name: cls.family for name, cls in sorted(_REGISTRY.items())}


def adapter_class_for(model_class: type | str) -> type[ModelAdapter] | None:
    """The adapter class registered for ``model_class`` (a class, matched along its MRO, or a
    class name, e.g. from a ``config.json``'s ``architectures``); ``None`` if there is none."""
    names = [model_class] if isinstance(model_class, str) else [cls.__name__ for cls in model_class.__mro__]
    return next((_REGISTRY[name] for name in names if name in _REGISTRY), None)


def unsupported_model_message(model_class: str) -> str:
    """One line saying that ``model_class`` has no adapter and which families do."""
    families: dict[str, list[str]] = {}
    for name, family in supported_models().items():
        families.setdefault(family, []).append(name)
    supported = "; ".join(f"{family} ({', '.join(names)})" for family, names in families.items())
    return (
        f"no FOCUS adapter for {model_class}; supported model families: {supported}. "
        "Register one with focus_modules.adapters.register_adapter(model_class, AdapterClass)."
    )


def adapter_for(model: nn.Module, processor, **options) -> ModelAdapter:
    """The registered adapter for ``model``'s class (or its nearest registered base class),
    built with ``options`` (the adapter's own keyword arguments, e.g. Qwen2.5-VL's
    ``max_pixels``)."""
    adapter_cls = adapter_class_for(type(model))
    if adapter_cls is None:
        raise ValueError(unsupported_model_message(type(model).__name__))
    return adapter_cls(model, processor, **options)


for _cls in (LlavaAdapter, LlavaOnevisionAdapter, Qwen2_5_VLAdapter, Qwen3VLAdapter, InternVLAdapter, Gemma3Adapter):
    for _name in _cls.model_classes:
        register_adapter(_name, _cls)

__all__ = [
    "Batch",
    "Encoding",
    "FinalView",
    "Gemma3Adapter",
    "InternVLAdapter",
    "LlavaAdapter",
    "LlavaOnevisionAdapter",
    "ModelAdapter",
    "MultiImageAdapter",
    "Qwen2_5_VLAdapter",
    "Qwen3VLAdapter",
    "Selection",
    "adapter_class_for",
    "adapter_for",
    "register_adapter",
    "supported_models",
    "unsupported_model_message",
]
