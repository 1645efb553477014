"""CTR models composed from the layers; see :mod:`monolith_layers.models.ctr`."""

from .ctr import ENCODERS, TRANSFORMS, ConfigError, CTRModel, ModelConfig

__all__ = ["ENCODERS", "TRANSFORMS", "CTRModel", "ConfigError", "ModelConfig"]
