"""Model hubs behind one interface: ``hub_for("hf" | "ms", settings)``."""

from __future__ import annotations

from kaiyuan.config import Settings
from kaiyuan.errors import InvalidRequest
from kaiyuan.store.hubs.base import Hub, HubFile, HubUnreachable, RepoInfo

__all__ = ["Hub", "HubFile", "HubUnreachable", "RepoInfo", "hub_for"]


def hub_for(scheme: str, settings: Settings) -> Hub:
    if scheme == "hf":
        from kaiyuan.store.hubs.hf import HuggingFace

        token = settings.hf_token.get_secret_value() if settings.hf_token else None
        return HuggingFace(settings.hf_endpoint, settings.hub_timeout, token)
    if scheme == "ms":
        from kaiyuan.store.hubs.ms import ModelScope

        return ModelScope(settings.ms_endpoint, settings.hub_timeout, settings.home)
    raise InvalidRequest(f"unknown hub '{scheme}': use hf:ORG/REPO or ms:ORG/REPO", param="model")
