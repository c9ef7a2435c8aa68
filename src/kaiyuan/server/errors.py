"""Every error leaves the server in its surface's envelope, mapped here and only here: OpenAI's
(``{"error": {"message", "type", "param", "code"}}``), Anthropic's under ``/v1/messages``
(``{"type": "error", "error": {"type", "message"}}``), Ollama's under ``/api/``
(``{"error": "message"}``).

Unexpected exceptions are logged with their traceback and answered with a generic message:
no exception text, path or repr ever reaches a client.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from kaiyuan.errors import FeatureNotInstalled, KaiyuanError, Overloaded
from kaiyuan.extras import for_missing
from kaiyuan.protocol.anthropic import errors as anthropic
from kaiyuan.protocol.ollama import errors as ollama
from kaiyuan.protocol.openai.common import ErrorBody, ErrorResponse

log = logging.getLogger(__name__)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def error_body(
    message: str, type_: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    body = ErrorBody(message=message, type=type_, param=param, code=code)
    return ErrorResponse(error=body).model_dump()


def envelope(exc: KaiyuanError) -> dict[str, Any]:
    return error_body(exc.message, exc.type, param=exc.param, code=exc.code)


def surface(path: str) -> str:
    """Which API a path belongs to: "anthropic", "ollama" or "openai"."""
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return "anthropic"
    if path.startswith("/api/"):
        return "ollama"
    return "openai"


def payload(
    path: str,
    status: int,
    message: str,
    type_: str,
    *,
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """An error body in the envelope of the surface ``path`` belongs to."""
    kind = surface(path)
    if kind == "anthropic":
        detail = anthropic.AnthropicErrorDetail(type=anthropic.error_type(status), message=message)
        return anthropic.AnthropicError(error=detail).model_dump()
    if kind == "ollama":
        return ollama.OllamaError(error=message).model_dump()
    return error_body(message, type_, param=param, code=code)


def exception_payload(path: str, exc: KaiyuanError) -> dict[str, Any]:
    return payload(path, exc.status, exc.message, exc.type, param=exc.param, code=exc.code)


def error_response(exc: KaiyuanError, retry_after: int = 1, path: str = "") -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if isinstance(exc, Overloaded) else None
    if isinstance(getattr(exc, "headers", None), dict):  # a rate limit's retry-after and counts
        headers = exc.headers  # type: ignore[attr-defined]
    if isinstance(exc, FeatureNotInstalled):
        # The SDKs retry any 5xx unless told not to; this one stays until an install.
        headers = {"x-should-retry": "false"}
    return JSONResponse(exception_payload(path, exc), status_code=exc.status, headers=headers)


# Union branches show up in pydantic locations as type tags ("str", "list[str]",
# "function-after[...]"); they mean nothing to a client.
_BRANCH_TAGS = {"str", "int", "float", "bool", "none", "dict", "list"}


def _param(loc: tuple[Any, ...]) -> str | None:
    # ("body", "messages", 0, "content", "str") -> "messages[0].content"
    parts: list[str] = []
    for item in loc[1:] if loc and loc[0] in ("body", "query", "path") else loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif isinstance(item, str) and ("[" in item or "-" in item or item in _BRANCH_TAGS):
            continue
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or None


def _best(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """For a union, the error of the branch that matched the input's type: "at most 16
    items" says more about a list than "Input should be a valid string"."""
    mismatch = ("_type", "union_tag_invalid", "literal_error", "model_attributes_type")
    return next((e for e in errors if not str(e.get("type", "")).endswith(mismatch)), errors[0])


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    first = _best(errors)
    kind = first.get("type", "")
    # Cross-field checks (model validators) name their parameter in the error context.
    param = (first.get("ctx") or {}).get("param") or _param(tuple(first.get("loc", ())))
    if kind == "json_invalid":
        return "the request body is not valid JSON", None
    if kind == "missing" and param is None:
        return "a JSON request body is required", None
    if kind == "extra_forbidden":
        return f"unrecognized request argument supplied: {param}", param
    if kind == "unknown_field":  # strict_params: the model names the field, loc its parent
        field = str((first.get("ctx") or {}).get("field", ""))
        param = _param((*tuple(first.get("loc", ())), field))
        return f"unrecognized request argument supplied: {param}", param
    message = str(first.get("msg", "invalid value"))
    message = message.removeprefix("Value error, ")
    return (f"invalid value for '{param}': {message}" if param else message), param


def install(app: FastAPI) -> None:
    @app.exception_handler(KaiyuanError)
    async def _kaiyuan(request: Request, exc: KaiyuanError) -> JSONResponse:
        if exc.status >= 500:
            log.warning("%s: %s", type(exc).__name__, exc.message, exc_info=exc.__cause__)
        return error_response(exc, request.app.state.settings.retry_after, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(list(exc.errors()))
        body = payload(request.url.path, 400, message, "invalid_request_error", param=param)
        return JSONResponse(body, status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, KaiyuanError):  # raised while FastAPI read the body
            return await _kaiyuan(request, exc.__cause__)
        status = exc.status_code
        # FastAPI reports an unparseable body (e.g. nested too deeply) as a bare 400.
        message = exc.detail if status != 400 else "the request body could not be parsed"
        body = payload(
            request.url.path,
            status,
            str(message),
            "invalid_request_error",
            code=_HTTP_CODES.get(status),
        )
        return JSONResponse(body, status_code=status, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A route that imported an optional package without its own require() check.
        missing = for_missing(exc, "this request") if isinstance(exc, ModuleNotFoundError) else None
        if missing is not None:
            return await _kaiyuan(request, missing)
        log.error("unhandled error", exc_info=exc)
        message = "the server had an internal error; see its log"
        return JSONResponse(payload(request.url.path, 500, message, "server_error"), 500)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Invalid request (parameter named in `error.param`)",
        404: "Unknown model",
        413: "Request body too large",
        500: "Internal or engine error",
        501: "The feature needs a kaiyuan extra this install lacks (named in the message)",
        503: "Server at capacity (see Retry-After) or engine not ready",
        504: "The engine stopped answering",
    }.items()
}
