"""Run untrusted Python in an OS sandbox (security guide T17): bubblewrap, never in-process.

The code runs as an unprivileged user (``nobody`` when kaiyuan runs as root) inside new user,
PID, network, IPC, UTS and mount namespaces: no network at all (not even the host's
loopback), a read-only ``/usr`` and nothing else of the host (no ``/etc``, no home, no
``/proc`` of the host), a private writable work directory, an empty environment, and rlimits
on address space, CPU time, processes and file size. A wall-clock timer kills the whole
namespace. stdout and stderr go to files outside the sandbox (capped by the file-size limit and
read back only up to ``max_output``).
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kaiyuan.errors import KaiyuanError

NOBODY = 65534
PYTHON = "/usr/bin/python3"
LAUNCH_ATTEMPTS = 8


class SandboxUnavailable(KaiyuanError):
    status = 503
    code = "sandbox_unavailable"


@dataclass(slots=True, frozen=True)
class Limits:
    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    memory_bytes: int = 512 * 2**20
    processes: int = 32
    file_bytes: int = 16 * 2**20
    max_output: int = 64 * 1024  # characters of stdout/stderr returned
    max_files: int = 100  # written files listed


@dataclass(slots=True)
class Result:
    exit_code: int | None  # None when killed by the wall clock
    stdout: str
    stderr: str
    timed_out: bool
    seconds: float
    files: list[dict[str, Any]] = field(default_factory=list)  # {"path", "bytes"} in the work dir
    signal: str | None = None  # e.g. SIGKILL (memory), SIGXCPU (CPU time), SIGXFSZ (file size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "signal": self.signal,
            "timed_out": self.timed_out,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "files": self.files,
            "seconds": round(self.seconds, 3),
        }


def available() -> bool:
    return shutil.which("bwrap") is not None and Path(PYTHON).exists()


def new_workdir() -> Path:
    """A fresh folder for one sandbox session, in the system's temporary directory (its path
    must be traversable by the unprivileged sandbox user, which a home folder is not)."""
    return Path(tempfile.mkdtemp(prefix="kaiyuan-sandbox-"))


def run_python(code: str, *, limits: Limits = Limits(), work: Path | None = None) -> Result:
    """Run ``code`` with ``python3 -I``; ``work`` (from :func:`new_workdir`; a fresh one by
    default) is the sandbox's writable /work and is left in place for the caller."""
    if not available():
        raise SandboxUnavailable(
            "the code sandbox needs bubblewrap (`apt-get install bubblewrap`, done by "
            "`make install`) and /usr/bin/python3"
        )
    work = work or new_workdir()
    with tempfile.TemporaryDirectory(prefix="kaiyuan-run-") as private:
        script = Path(private) / "main.py"
        script.write_text(code, encoding="utf-8")
        as_root = os.geteuid() == 0
        if as_root:  # the sandboxed user must own its work folder, nothing else
            os.chown(work, NOBODY, NOBODY)
            os.chmod(private, 0o755)  # noqa: S103 (nobody reads main.py; nothing else is in it)
        out_path, err_path = Path(private) / "stdout", Path(private) / "stderr"
        for attempt in range(LAUNCH_ATTEMPTS):
            process, started, timed_out, seconds = _launch(
                script, work, limits, as_root, out_path, err_path
            )
            if started:
                break
            # The kernel frees a finished sandbox's namespaces and process count a moment after
            # it exits, so a burst of runs can be refused (EAGAIN) before the code even starts.
            time.sleep(0.05 * 2**attempt * (1 + random.random()))  # noqa: S311
        else:
            reason = _read(err_path, 300).strip().splitlines()
            raise SandboxUnavailable(
                f"the code sandbox could not start ({reason[0] if reason else 'no reason given'})"
            )
        code_ = process.returncode
        return Result(
            exit_code=None if timed_out else (code_ if code_ >= 0 else 128 - code_),
            stdout=_read(out_path, limits.max_output),
            stderr=_read(err_path, limits.max_output),
            timed_out=timed_out,
            seconds=seconds,
            files=_files(work, limits.max_files),
            signal=None if timed_out else _signal(code_),
        )


def _launch(
    script: Path, work: Path, limits: Limits, as_root: bool, out_path: Path, err_path: Path
) -> tuple[subprocess.Popen[bytes], bool, bool, float]:
    """One try: the process, whether the code ran (bwrap reports the code's exit on its status
    pipe; a sandbox that failed to set up reports none), whether the wall clock killed it, and
    the seconds taken."""
    status_read, status_write = os.pipe()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.monotonic()
        try:
            process = subprocess.Popen(
                _command(script, work, as_root, status_write),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env={"PATH": "/usr/bin:/bin"},
                start_new_session=True,
                pass_fds=(status_write,),
                preexec_fn=lambda: _limit(limits, as_root),
            )
        finally:
            os.close(status_write)
        timed_out = False
        try:
            process.wait(timeout=limits.wall_seconds)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        seconds = time.monotonic() - started
    with os.fdopen(status_read, "rb") as status:
        ran = timed_out or b'"exit-code"' in status.read(4096)
    return process, ran, timed_out, seconds


def _command(script: Path, work: Path, as_root: bool, status_fd: int) -> list[str]:
    drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    return [
        *(drop if as_root else []),
        "bwrap",
        "--unshare-all",  # user, pid, net, ipc, uts, cgroup namespaces
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--json-status-fd", str(status_fd),
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/lib", "/lib",
        "--symlink", "usr/lib64", "/lib64",
        "--symlink", "usr/bin", "/bin",
        "--proc", "/proc",
        "--dev", "/dev",
        "--tmpfs", "/tmp",  # noqa: S108 (the sandbox's private scratch space)
        "--bind", str(work), "/work",
        "--ro-bind", str(script), "/sandbox/main.py",
        "--remount-ro", "/",  # the sandbox's own root: nothing new can appear in it
        "--chdir", "/work",
        "--hostname", "sandbox",
        "--setenv", "PATH", "/usr/bin:/bin",
        "--setenv", "HOME", "/work",
        "--setenv", "LANG", "C.UTF-8",
        "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
        "--",
        PYTHON, "-I", "/sandbox/main.py",
    ]  # fmt: skip


def _limit(limits: Limits, as_root: bool) -> None:
    """In the child, before exec: limits inherited by bwrap and everything it starts."""
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # RLIMIT_NPROC counts every process of the (real) user: as root the sandbox runs as nobody,
    # whose processes are the sandbox's own; otherwise the user's current count is the base.
    base = 0 if as_root else _processes_of(os.getuid())
    nproc = base + limits.processes
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


def _processes_of(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                count += entry.stat().st_uid == uid
            except OSError:
                continue
    return count


def _signal(code: int) -> str | None:
    """The signal that ended the run: a negative return code, or bwrap's 128 + N."""
    number = -code if code < 0 else code - 128 if code > 128 else 0
    try:
        return signal.Signals(number).name if number else None
    except ValueError:
        return None


def _read(path: Path, limit: int) -> str:
    with path.open("rb") as handle:
        data = handle.read(limit * 4 + 4)
    text = data.decode("utf-8", errors="replace")
    return text if len(text) <= limit else text[:limit] + "\n[output truncated]"


def _files(work: Path, limit: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in sorted(work.rglob("*")):
        if path.is_file() and not path.is_symlink():
            found.append({"path": str(path.relative_to(work)), "bytes": path.stat().st_size})
            if len(found) >= limit:
                break
    return found
