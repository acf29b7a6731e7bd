"""Build and run the OpenAI-compatible server of a base model and its adapters."""

from __future__ import annotations

from dataclasses import dataclass, field

import litserve as ls

from lightning_ft.model.spec import DTypeName
from lightning_ft.serve.api import GenerationAPI
from lightning_ft.serve.errors import install_error_handlers
from lightning_ft.serve.models import ModelRegistry


@dataclass(frozen=True)
class ServeConfig:
    """Everything `run_server` needs (picklable, so a test or script can run the server in another process).

    Args:
        model: The base model or export (see `ModelRegistry`).
        adapters: Served name -> LoRA adapter export of the same base.
        host: Address to bind: ``127.0.0.1`` (this machine only), ``0.0.0.0`` or ``::``.
        port: Port to listen on.
        api_key: When given, every request must carry ``Authorization: Bearer <api_key>``.
        max_batch_size: Most requests generated together.
        batch_timeout: Seconds the worker waits for a batch to fill.
        request_timeout: Seconds a request may wait in the queue before it is answered with a 504.
        dtype: Dtype of the weights.
        log_level: uvicorn's log level.
    """

    model: str
    adapters: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_batch_size: int = 8
    batch_timeout: float = 0.05
    request_timeout: float = 600.0
    dtype: DTypeName = "float32"
    log_level: str = "warning"


def build_server(config: ServeConfig) -> ls.LitServer:
    """The LitServer (not started): tokenizers and configs are read here, the weights by the inference worker."""
    registry = ModelRegistry(config.model, config.adapters, dtype=config.dtype)
    api = GenerationAPI(registry, config.api_key, config.max_batch_size, config.batch_timeout)
    server = ls.LitServer(api, accelerator="auto", devices=1, timeout=config.request_timeout)
    install_error_handlers(server.app)
    return server


def run_server(config: ServeConfig) -> None:
    """Serve until interrupted (Ctrl-C / SIGINT stops the HTTP and inference workers with it)."""
    server = build_server(config)
    print(f"Serving {', '.join(server.lit_api.registry.names)} at http://{config.host}:{config.port}/v1", flush=True)
    server.run(host=config.host, port=config.port, log_level=config.log_level, generate_client_file=False)
