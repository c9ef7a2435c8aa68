"""The images the server keeps: ``<home>/media/NAME.png`` (what ``GET /v1/media/{name}`` serves)
and beside each a ``NAME.json`` with who asked for it and how it was made.

Only files written here are listed: a PNG with no such record (an older server's, or one put in
the folder by hand) is served by name but never appears in a list. With API keys an image
belongs to the key that made it, and another key's image is as absent as one that never existed
(the conversations' rule, T14); without keys images belong to nobody.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

from kaiyuan.errors import NotFound
from kaiyuan.protocol.kaiyuan.media import MediaItem

IMAGE = re.compile(r"^[0-9a-f]{32}\.png$")
RECORD = re.compile(r"^([0-9a-f]{32})\.json$")


class Gallery:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def save(self, png: bytes, owner: str | None, settings: dict[str, Any]) -> str:
        """Write one image and its record; the image's file name. The record is written last
        and renamed into place, so a listing never reads half of one."""
        self.folder.mkdir(parents=True, exist_ok=True)
        stem = uuid.uuid4().hex
        (self.folder / f"{stem}.png").write_bytes(png)
        record = {"owner": owner, "created": int(time.time()), **settings}
        partial = self.folder / f".{stem}.json.partial"
        partial.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
        os.replace(partial, self.folder / f"{stem}.json")
        return f"{stem}.png"

    def list(self, owner: str | None, limit: int) -> list[MediaItem]:
        """``owner``'s images, newest first, at most ``limit``."""
        if not self.folder.is_dir():
            return []
        records = []
        for entry in os.scandir(self.folder):
            if RECORD.match(entry.name) and entry.is_file():
                records.append((entry.stat().st_mtime_ns, entry.name))
        found: list[MediaItem] = []
        for _, name in sorted(records, reverse=True):
            item = self._read(name[:-5], owner)
            if item is not None:
                found.append(item)
                if len(found) == limit:
                    break
        return found

    def delete(self, owner: str | None, name: str) -> None:
        """Remove ``owner``'s image and its record; a 404 for any other."""
        if not IMAGE.match(name) or self._read(name[:-4], owner) is None:
            raise NotFound(f"no image '{name[:80]}'", param="name")
        (self.folder / name).unlink(missing_ok=True)
        (self.folder / f"{name[:-4]}.json").unlink(missing_ok=True)

    def _read(self, stem: str, owner: str | None) -> MediaItem | None:
        try:
            record = json.loads((self.folder / f"{stem}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # removed meanwhile, or not ours
        if not isinstance(record, dict) or record.get("owner") != owner:
            return None
        if not (self.folder / f"{stem}.png").is_file():
            return None
        try:
            return MediaItem.model_validate({**record, "id": f"{stem}.png"})
        except ValueError:
            return None
