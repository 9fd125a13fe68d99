"""Model registry (timm-style): `@register_model(...)` builders, `create_model(name, scale)`.

Each builder is ``fn(scale: int) -> nn.Module`` following the model contract of docs/architecture.md:
attributes `head`, `body`, `upsampler`, `tail`, `scale`; forward RGB [0, 1] (N, 3, H, W) -> (N, 3, sH, sW).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from bsr_cli.errors import BsrError

__all__ = ["ModelInfo", "register_model", "create_model", "list_models", "get_model_info"]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    builder: Callable[..., nn.Module] = field(repr=False)
    paper: str
    family: str
    binarized: str  # which parts are 1-bit, in words
    scales: tuple[int, ...] = (2, 3, 4)
    description: str = ""


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    name: str | None = None,
    *,
    paper: str,
    family: str,
    binarized: str,
    scales: tuple[int, ...] = (2, 3, 4),
    description: str = "",
):
    """Decorator: register ``fn(scale) -> nn.Module`` under `name` (default: fn.__name__ with _ -> -)."""

    def deco(fn):
        key = name or fn.__name__.replace("_", "-")
        add_model(key, fn, paper=paper, family=family, binarized=binarized, scales=scales, description=description)
        return fn

    return deco


def add_model(name: str, builder: Callable[..., nn.Module], **meta) -> None:
    """Register a builder programmatically (used for the generated abnn-* combinations)."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} registered twice")
    desc = meta.pop("description", "") or (builder.__doc__ or "").strip().split("\n")[0]
    _REGISTRY[name] = ModelInfo(name=name, builder=builder, description=desc, **meta)


def _ensure_loaded() -> None:
    import bsr_cli.models  # noqa: F401  (importing the package registers every family module)


def list_models() -> list[str]:
    _ensure_loaded()
    return list(_REGISTRY)


def get_model_info(name: str) -> ModelInfo:
    _ensure_loaded()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else "; run `bsr models` for the list"
        raise BsrError(f"unknown model {name!r}{hint}")
    return _REGISTRY[name]


def create_model(name: str, scale: int = 4, **kwargs) -> nn.Module:
    """Build model `name` for upscaling factor `scale` (randomly initialised; weights are loaded elsewhere)."""
    info = get_model_info(name)
    if scale not in info.scales:
        supported = ", ".join(f"x{s}" for s in info.scales)
        raise BsrError(f"model {name!r} does not support scale x{scale} (supported: {supported})")
    model = info.builder(scale, **kwargs)
    model.scale = scale
    model.model_name = name
    return model
