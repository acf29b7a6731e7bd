"""`lightning-ft serve`: an OpenAI-compatible server (LitServe) of a base model and its LoRA adapters."""

from lightning_ft.serve.background import serving
from lightning_ft.serve.server import ServeConfig, build_server, run_server

__all__ = ["ServeConfig", "build_server", "run_server", "serving"]
