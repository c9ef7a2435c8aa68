"""kaiyuan's error tree. The server maps these to the OpenAI error envelope in one place.

Messages are written for the user and say how to fix the problem; they never carry
tracebacks, file paths or object reprs.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class KaiyuanError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


# --- the user's fault (4xx) ---------------------------------------------------------------
class InvalidRequest(KaiyuanError):
    status = 400
    type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class ModelNotFound(KaiyuanError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class NotFound(KaiyuanError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class PayloadTooLarge(KaiyuanError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


# --- the server's state (5xx) -------------------------------------------------------------
class FeatureNotInstalled(KaiyuanError):
    """The feature needs a pip extra this install lacks (see ``kaiyuan.extras``).

    501, as llama.cpp's server answers a feature it was started without: the request is
    valid, this server cannot do it until the extra is installed, and retrying won't help.
    """

    status = 501
    type = "not_supported_error"
    code = "feature_not_installed"

    @classmethod
    def of(cls, extra: str, feature: str, module: str) -> FeatureNotInstalled:
        return cls(
            f"{feature} needs kaiyuan's '{extra}' extra ({module} is not installed): "
            f"pip install 'kaiyuan[{extra}]'"
        )


class Overloaded(KaiyuanError):
    status = 503
    type = "server_error"
    code = "server_overloaded"


class EngineFailure(KaiyuanError):
    """The engine failed while generating; details are logged, not sent."""

    status = 500
    code = "engine_error"


class EngineTimeout(KaiyuanError):
    status = 504
    code = "engine_timeout"


class TemplateError(KaiyuanError):
    """The model's own chat template could not render (or tried something unsafe)."""

    status = 500
    code = "chat_template_error"


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the candidate closest to a mistyped ``name``, else ``""``:
    the tail of a not-found message."""
    close = closest(name, candidates)
    return f"; did you mean '{close}'?" if close else ""


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate a typo of ``name`` most likely meant (difflib's ratio, 0.6 or more)."""
    if len(name) > 256:  # no id is that long; a huge request field is not compared
        return None
    # Case is a typo too: 'SmolLM2-135M-Instruct' means 'smollm2-135m-instruct'.
    by_lower = {c.lower(): c for c in candidates if c != name}
    found = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[found[0]] if found else None
