"""Lightning callbacks: atomic checkpoints, Hugging Face export, token throughput, resume, out-of-memory advice,
generation metrics at validation, run reports for experiment trackers."""

from lightning_ft.callbacks.checkpoint import AtomicModelCheckpoint
from lightning_ft.callbacks.export import HuggingFaceExport
from lightning_ft.callbacks.generation_eval import GenerationEval
from lightning_ft.callbacks.memory import OutOfMemoryAdvice
from lightning_ft.callbacks.resume import ResumeDataPosition
from lightning_ft.callbacks.throughput import TokenRateProgressBar, TokenThroughputMonitor
from lightning_ft.callbacks.tracking import TrackingReport

__all__ = [
    "AtomicModelCheckpoint",
    "GenerationEval",
    "HuggingFaceExport",
    "OutOfMemoryAdvice",
    "ResumeDataPosition",
    "TokenRateProgressBar",
    "TokenThroughputMonitor",
    "TrackingReport",
]
