"""The client of an OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp's server, `lightning-ft serve`, ...) that the
judge and the data generators share."""

from __future__ import annotations

import os
from typing import Any


def openai_client(base_url: str, api_key_env: str, timeout: float, install_hint: str) -> Any:
    """The official ``openai`` client for ``base_url``: the API key read from the environment variable
    ``api_key_env`` (``EMPTY`` is sent when it is unset) and kept only inside the client; no retries, so a failed
    request is reported, not repeated. ``install_hint`` says how to install the client when it is missing."""
    try:
        import openai
    except ImportError as error:
        raise ImportError(f"An endpoint needs the openai client: {install_hint}") from error
    api_key = os.environ.get(api_key_env) or "EMPTY"
    return openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0)
