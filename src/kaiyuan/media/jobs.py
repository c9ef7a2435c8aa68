"""Video generation jobs: rows in SQLite (SQLAlchemy) under KAIYUAN_HOME, run one at a time per
model in the background. A restart marks jobs that were queued or running as failed, so no job
is silently lost; DELETE cancels a running job at its next denoising step."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import Float, Integer, String, Text, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from kaiyuan.db import open_database
from kaiyuan.db.legacy import import_once
from kaiyuan.engines.base import Cancelled, MediaEngine, MediaRequest
from kaiyuan.errors import KaiyuanError, NotFound
from kaiyuan.protocol.openai.media import Video, VideoDeleteResponse, VideoError

log = logging.getLogger(__name__)
ACTIVE = ("queued", "in_progress")


class Base(DeclarativeBase):
    pass


class VideoJob(Base):
    __tablename__ = "video_jobs"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    created: Mapped[float] = mapped_column(Float, index=True)
    completed: Mapped[float | None] = mapped_column(Float, nullable=True)
    model: Mapped[str] = mapped_column(String(200))
    prompt: Mapped[str] = mapped_column(Text)
    params: Mapped[str] = mapped_column(Text)  # JSON: width, height, frames, fps, steps, seed...
    status: Mapped[str] = mapped_column(
        String(20)
    )  # queued, in_progress, completed, failed, cancelled
    progress: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    path: Mapped[str | None] = mapped_column(Text, nullable=True)


class Jobs:
    def __init__(self, home: Path, url: str | None = None) -> None:
        self.folder = home / "media" / "videos"
        self.engine = open_database(home, url)
        import_once(self.engine, home / "media.sqlite", {"videos": VideoJob.__table__})  # type: ignore[dict-item]
        self.cancels: dict[str, threading.Event] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        with Session(self.engine) as session, session.begin():  # a restart: say so, lose none
            for job in session.scalars(select(VideoJob).where(VideoJob.status.in_(ACTIVE))):
                job.status, job.error = "failed", "the server restarted before it finished"

    def close(self) -> None:
        self.engine.dispose()

    def create(self, model: str, prompt: str, params: dict[str, Any]) -> Video:
        job_id = f"video_{uuid.uuid4().hex}"
        with Session(self.engine) as session, session.begin():
            row = VideoJob(id=job_id, created=time.time(), model=model, prompt=prompt,
                           params=json.dumps(params), status="queued", progress=0)  # fmt: skip
            session.add(row)
        self.cancels[job_id] = threading.Event()
        return self.get(job_id)

    def get(self, job_id: str) -> Video:
        with Session(self.engine) as session:
            job = session.get(VideoJob, job_id)
            if job is None:
                raise NotFound(f"no video '{job_id[:60]}'", param="video_id")
            return _public(job)

    def path(self, job_id: str) -> Path:
        with Session(self.engine) as session:
            job = session.get(VideoJob, job_id)
            if job is None:
                raise NotFound(f"no video '{job_id[:60]}'", param="video_id")
            if job.status != "completed" or job.path is None:
                raise NotFound(f"video '{job_id}' is {job.status}, not ready", param="video_id")
            return Path(job.path)

    def list(self, limit: int = 50) -> list[Video]:
        with Session(self.engine) as session:
            rows = session.scalars(select(VideoJob).order_by(VideoJob.created.desc()).limit(limit))
            return [_public(job) for job in rows]

    def update(self, job_id: str, **fields: Any) -> None:
        with Session(self.engine) as session, session.begin():
            job = session.get(VideoJob, job_id)
            if job is not None:
                for key, value in fields.items():
                    setattr(job, key, value)

    def delete(self, job_id: str) -> VideoDeleteResponse:
        """Cancel a job that is still running; remove a finished one and its file."""
        current = self.get(job_id)
        cancel = self.cancels.get(job_id)
        if current.status in ACTIVE and cancel is not None:
            cancel.set()
        with Session(self.engine) as session, session.begin():
            job = session.get(VideoJob, job_id)
            if job is not None:
                if job.path:
                    Path(job.path).unlink(missing_ok=True)
                session.delete(job)
        return VideoDeleteResponse(id=job_id, deleted=True)


def _public(job: VideoJob) -> Video:
    """The job as OpenAI's video object; the file path, steps and seed stay internal."""
    params = json.loads(job.params)
    return Video(
        id=job.id, model=job.model, status=job.status, progress=job.progress,
        created_at=int(job.created), completed_at=int(job.completed) if job.completed else None,
        prompt=job.prompt, seconds=str(round(params["frames"] / params["fps"], 2)),
        size=f"{params['width']}x{params['height']}",
        error=VideoError(code="generation_failed", message=job.error) if job.error else None,
        frames=params["frames"], fps=params["fps"],
    )  # fmt: skip


async def run(
    jobs: Jobs, job_id: str, engine: MediaEngine, request: MediaRequest, fps: int
) -> None:
    """Generate, encode and store one video, recording progress and the outcome."""
    from kaiyuan.media.mp4 import write_mp4

    last = [0.0]

    def progress(step: int, steps: int) -> None:
        now = time.monotonic()
        if now - last[0] > 0.5 or step == steps:  # at most two writes a second
            last[0] = now
            jobs.update(job_id, progress=min(99, int(100 * step / steps)))

    request.progress = progress
    request.cancelled = jobs.cancels[job_id]
    jobs.update(job_id, status="in_progress")
    try:
        videos = await asyncio.to_thread(engine.generate_media, request)
        jobs.folder.mkdir(parents=True, exist_ok=True)
        path = jobs.folder / f"{job_id}.mp4"
        await asyncio.to_thread(write_mp4, videos[0], path, fps)
        jobs.update(job_id, status="completed", progress=100, path=str(path),
                    completed=time.time())  # fmt: skip
    except Cancelled:
        jobs.update(job_id, status="cancelled", error="cancelled by the client")
    except KaiyuanError as exc:
        jobs.update(job_id, status="failed", error=exc.message)
    except Exception:
        log.exception("video job %s failed", job_id)
        jobs.update(job_id, status="failed", error="the generation failed; see the server log")
    finally:
        jobs.cancels.pop(job_id, None)
