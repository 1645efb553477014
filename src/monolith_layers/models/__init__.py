"""CTR models composed from the layers; see :mod:`monolith_layers.models.ctr`."""

from ..config import ConfigError
from .ctr import ENCODERS, TRANSFORMS, CTRModel, ModelConfig
from .features import FeatureCTRModel, build_model, feature_spec

__all__ = [
    "ENCODERS",
    "TRANSFORMS",
    "CTRModel",
    "ConfigError",
    "FeatureCTRModel",
    "ModelConfig",
    "build_model",
    "feature_spec",
]
