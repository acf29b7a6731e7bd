"""OpenAI-style error replies: ``{"error": {"message", "type", "param", "code"}}`` with a 4xx/5xx status, for our
own checks, FastAPI's body validation (malformed JSON is a 400, as OpenAI answers it) and LitServe's exceptions."""

from __future__ import annotations

import pickle
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

UNION_MEMBER_NAMES = {"str", "int", "float", "bool", "none", "dict", "list", "ChatMessage"}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error"}


class RequestError(Exception):
    """A request the server refuses, reported to the client as OpenAI reports it."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status_code: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status_code = status_code

    def body(self) -> dict[str, Any]:
        error_type = ERROR_TYPES.get(self.status_code, "server_error" if self.status_code >= 500 else "invalid_request")
        return {"error": {"message": self.message, "type": error_type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status_code)


def as_request_error(error: Any) -> RequestError:
    """What an inference worker sent back as an error (an exception, possibly still pickled) as a `RequestError`."""
    if isinstance(error, bytes):
        try:
            error = pickle.loads(error)
        except Exception:  # noqa: BLE001 - whatever it was, the client gets a 500
            error = None
    if isinstance(error, RequestError):
        return error
    if isinstance(error, HTTPException):
        return RequestError(str(error.detail), status_code=error.status_code, code="server_error")
    return RequestError("The model failed to generate a reply", status_code=500, code="server_error")


def install_error_handlers(app: FastAPI) -> None:
    """Make every error reply of ``app`` OpenAI-shaped."""

    async def request_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestError)
        return error.response()

    async def invalid_body(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        problems = error.errors()
        first = problems[0] if problems else {}
        location = _field_path(first.get("loc", ()))
        if first.get("type") == "json_invalid":
            return RequestError("The request body is not valid JSON", code="invalid_json").response()
        if first.get("type") == "missing" and not location:
            return RequestError("The request has no body: send a JSON object", code="invalid_json").response()
        message = f"{'.'.join(location) or 'body'}: {first.get('msg', 'invalid value')}"
        return RequestError(message, param=".".join(location) or None, code="invalid_value").response()

    async def http_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, HTTPException)
        code = "invalid_api_key" if error.status_code == 401 else None
        return RequestError(str(error.detail), code=code, status_code=error.status_code).response()

    app.add_exception_handler(RequestError, request_error)
    app.add_exception_handler(RequestValidationError, invalid_body)
    app.add_exception_handler(HTTPException, http_error)


def _field_path(location: tuple) -> list[str]:
    """The request field a validation error's location names: ``("body", "stop", "list[str]", 5)`` -> ``["stop"]``
    (pydantic adds the tried member of a union, such as ``str`` or ``list[str]``, and what follows is inside it)."""
    path = []
    for part in location[1:] if location[:1] == ("body",) else location:
        if isinstance(part, str) and not part.replace("_", "").isalnum() or part in UNION_MEMBER_NAMES:
            break
        path.append(str(part))
    return path
