"""Request fields no model knows: dropped with one warning per request, as vLLM does, or
refused (400 naming the field) when the server's ``strict_params`` is on.

Every request model of every surface derives from :class:`Request`. While a request's body is
validated, the server points :data:`UNKNOWN` at a list; each model (nested ones too) adds the
names it dropped, and the server logs them once. Outside a request (kaiyuan's own translations
between surfaces, tests) the list is absent and an unknown name is an error: a typo in
kaiyuan's own code must not pass silently. A model that sets ``extra="forbid"`` itself (a
chat template's keyword arguments) refuses unknown names always.
"""

from __future__ import annotations

from contextvars import ContextVar
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, ModelWrapValidatorHandler, model_validator
from pydantic_core import PydanticCustomError

# A list: collect dropped names there. None: refuse them.
UNKNOWN: ContextVar[list[str] | None] = ContextVar("unknown_fields", default=None)


class Request(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    @model_validator(mode="wrap")
    @classmethod
    def _unknown_fields(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        if isinstance(data, dict) and cls.model_config.get("extra") != "forbid":
            known = _known(cls)
            unknown = [key for key in data if key not in known]
            if unknown:
                collected = UNKNOWN.get()
                if collected is None:
                    raise PydanticCustomError(
                        "unknown_field", "unrecognized request argument", {"field": unknown[0]}
                    )
                collected.extend(str(key)[:64] for key in unknown)
        return handler(data)


@cache
def _known(cls: type[BaseModel]) -> frozenset[str]:
    names = set(cls.model_fields)
    names.update(f.alias for f in cls.model_fields.values() if f.alias)
    return frozenset(names)
