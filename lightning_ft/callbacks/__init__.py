"""Lightning callbacks: atomic checkpoints, Hugging Face export, token throughput."""

from lightning_ft.callbacks.checkpoint import AtomicModelCheckpoint
from lightning_ft.callbacks.export import HuggingFaceExport
from lightning_ft.callbacks.throughput import TokenRateProgressBar, TokenThroughputMonitor

__all__ = ["AtomicModelCheckpoint", "HuggingFaceExport", "TokenRateProgressBar", "TokenThroughputMonitor"]
