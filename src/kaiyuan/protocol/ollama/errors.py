"""Ollama's error body: ``{"error": "message"}`` with the HTTP status."""

from __future__ import annotations

from pydantic import BaseModel


class OllamaError(BaseModel):
    error: str
