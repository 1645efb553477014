"""CTR models composed from the layers; see :mod:`monolith_layers.models.ctr`."""

from ..config import ConfigError
from .ctr import ENCODERS, TRANSFORMS, CTRModel, ModelConfig

__all__ = ["ENCODERS", "TRANSFORMS", "CTRModel", "ConfigError", "ModelConfig"]
