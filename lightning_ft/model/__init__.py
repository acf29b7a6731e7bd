"""Model specs, training methods (full, freeze, adapters), export and generation."""

from lightning_ft.model.bottleneck import BottleneckConfig
from lightning_ft.model.freeze import FreezePolicy
from lightning_ft.model.spec import ModelSpec

__all__ = ["BottleneckConfig", "FreezePolicy", "ModelSpec"]
