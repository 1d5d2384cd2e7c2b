"""Model building (offline, real architecture) and loading (built, local or hub checkpoints)."""

from egovlm.models.build import build_model
from egovlm.models.loading import LoadedModel, load_model

__all__ = ["LoadedModel", "build_model", "load_model"]
