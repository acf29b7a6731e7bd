"""Model merging: MergeKit's methods on full models, peft's adapter merging for LoRA exports of one base."""

from lightning_ft.merge.config import MergeConfigError, merge_method_names, read_merge_config
from lightning_ft.merge.run import MergeReport, merge_models
from lightning_ft.merge.sources import MergeSourceError

__all__ = [
    "MergeConfigError",
    "MergeReport",
    "MergeSourceError",
    "merge_method_names",
    "merge_models",
    "read_merge_config",
]
