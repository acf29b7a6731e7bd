"""Lightning callbacks: Hugging Face export, token throughput."""

from lightning_ft.callbacks.export import HuggingFaceExport
from lightning_ft.callbacks.throughput import TokenRateProgressBar, TokenThroughputMonitor

__all__ = ["HuggingFaceExport", "TokenRateProgressBar", "TokenThroughputMonitor"]
