"""Model building (offline, real architecture) and loading (built, local or hub checkpoints).

Names are resolved lazily so that importing a light submodule (the CLI, presets) does not
import torch and transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from egovlm.models.build import build_model
    from egovlm.models.loading import LoadedModel, load_model

__all__ = ["LoadedModel", "build_model", "load_model"]


def __getattr__(name: str) -> Any:
    if name == "build_model":
        from egovlm.models.build import build_model

        return build_model
    if name in ("LoadedModel", "load_model"):
        from egovlm.models import loading

        return getattr(loading, name)
    raise AttributeError(f"module 'egovlm.models' has no attribute {name!r}")
