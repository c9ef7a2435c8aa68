"""Run untrusted Python in an OS sandbox (security guide T17, T23): bubblewrap, never in-process.

The code runs as an unprivileged user (``nobody`` when kaiyuan runs as root) inside new user,
PID, network, IPC, UTS, cgroup and mount namespaces: no network at all (not even the host's
loopback), a read-only ``/usr`` and nothing else of the host (no ``/etc``, no home, no
``/proc`` of the host), an empty environment, no nested user namespaces (``--disable-userns``),
the seccomp filter of :mod:`kaiyuan.tools.seccomp`, and rlimits on address space, CPU time,
processes and file size. No host path is visible inside: bwrap reads its arguments, the code
and the launcher from memory files (``--args``, ``--ro-bind-data``), and stdout and stderr are
memory files too, so neither ``/proc/*/cmdline``, ``mountinfo`` nor ``/proc/*/fd`` names a host
folder.

The memory budget, ``Limits.memory_bytes``, is split (:meth:`Limits.budget`):

- ``/work``: a tmpfs of ``min(work_bytes, memory_bytes / 4)``;
- ``/tmp``: a tmpfs of ``memory_bytes / 8``;
- ``/dev/shm``: a tmpfs of ``memory_bytes / 16`` (the rest of ``/dev`` is read-only);
- the rest, at least 9/16, is RLIMIT_AS, the address space of a process.

So code that fills the three folders and its own address space stays within ``memory_bytes``.
RLIMIT_AS counts per process: up to ``processes`` of them may each reach it.

The work folder on the host is never mounted in the sandbox. A launcher (``LAUNCHER``, run by
bwrap before the code) unpacks the folder's files, sent as a tar on its stdin, into the
``/work`` tmpfs; runs the code as its child (with the file-size limit and a wall-clock timer);
kills whatever the code left running; and writes ``/work`` back as a tar on a memory file
(host memory, up to ``work_bytes``, while the run ends), followed by a trailer that marks the
stream complete. The host unpacks only folders and regular files, bounded in bytes and
entries, and only from a complete stream replaces the work folder's content with them (so the
folder also loses what the code deleted). The launcher runs inside the sandbox and the code
could tamper with it: the host trusts nothing it sends.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import re
import resource
import select
import shutil
import signal
import stat
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from kaiyuan.errors import KaiyuanError
from kaiyuan.tools import seccomp

NOBODY = 65534
PYTHON = "/usr/bin/python3"
LAUNCH_ATTEMPTS = 8
MAX_ENTRIES = 10_000  # folders and files /work hands back
GRACE_SECONDS = 5.0  # past the wall clock, for the launcher to unpack and ship /work
TRAILER = re.compile(rb"\nkaiyuan-end ([01])\n\Z")

# Runs as /usr/bin/python3 -I -S inside the sandbox, in /work, under the seccomp filter.
# argv: the fd for the tar of /work, wall seconds, file bytes, work bytes, most entries.
# No `signal` module: importing it (and enum) would cost 5 ms a run.
LAUNCHER = r"""
import os, resource, select, stat, sys

back, wall = int(sys.argv[1]), float(sys.argv[2])
file_bytes, work_bytes, most = map(int, sys.argv[3:6])


def unpack():
    stdin = sys.stdin.buffer
    if not stdin.peek(1):
        return
    import tarfile
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    try:
        with tarfile.open(fileobj=stdin, mode="r|") as tar:
            tar.extractall(".", **safe)
    except (OSError, tarfile.TarError) as exc:
        print(f"kaiyuan: /work could not hold all its files ({exc})", file=sys.stderr)


def run():
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    try:
        pid = os.fork()
    except BlockingIOError:  # no trailer: the host tries again
        print("kaiyuan: too many processes to start the code", file=sys.stderr)
        sys.exit(75)
    if pid == 0:
        try:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
            os.closerange(3, 1 << 16)
            os.execv("/usr/bin/python3", ["/usr/bin/python3", "-I", "/sandbox/main.py"])
        finally:
            os._exit(127)
    done = select.select([os.pidfd_open(pid)], [], [], wall)[0]
    try:
        os.kill(-1, 9)  # SIGKILL to all but pid 1 and us: the code and what it left running
    except ProcessLookupError:
        pass
    return not done, os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def walk():
    count = total = 0
    for root, dirs, files in os.walk("."):
        for name in dirs + files:
            path = os.path.join(root, name)[2:]
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
            elif not stat.S_ISDIR(info.st_mode):
                continue
            count += 1
            if count > most or total > work_bytes:
                return
            yield path, info


def ship(sink):
    entries = list(walk())
    if not entries:
        return
    import tarfile
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for path, info in entries:
            entry = tarfile.TarInfo(path)
            entry.mode, entry.mtime = stat.S_IMODE(info.st_mode), int(info.st_mtime)
            if stat.S_ISDIR(info.st_mode):
                entry.type = tarfile.DIRTYPE
                tar.addfile(entry)
                continue
            try:
                source = open(path, "rb")
            except OSError:
                continue
            with source:
                entry.size = info.st_size
                tar.addfile(entry, source)


unpack()
timed_out, code = run()
with os.fdopen(back, "wb") as sink:
    ship(sink)
    sink.write(b"\nkaiyuan-end %d\n" % timed_out)
sys.exit(code if code >= 0 else 128 - code)
"""


class SandboxUnavailable(KaiyuanError):
    status = 503
    code = "sandbox_unavailable"


@dataclass(slots=True, frozen=True)
class Budget:
    """How ``Limits.memory_bytes`` is spent (see the module docstring)."""

    address_space: int
    work: int
    tmp: int
    shm: int


@dataclass(slots=True, frozen=True)
class Limits:
    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    memory_bytes: int = 512 * 2**20  # all of it: address space, /work, /tmp and /dev/shm
    processes: int = 32
    file_bytes: int = 16 * 2**20
    max_output: int = 64 * 1024  # characters of stdout/stderr returned
    max_files: int = 100  # written files listed
    work_bytes: int = 64 * 2**20  # most /work holds (at most a quarter of memory_bytes)

    def __post_init__(self) -> None:
        if self.memory_bytes < 16 * 2**20 or self.work_bytes < 2**20:  # a 0-size tmpfs is uncapped
            raise ValueError("the sandbox needs memory_bytes >= 16 MiB and work_bytes >= 1 MiB")

    def budget(self) -> Budget:
        work = min(self.work_bytes, self.memory_bytes // 4)
        tmp, shm = self.memory_bytes // 8, self.memory_bytes // 16
        return Budget(self.memory_bytes - work - tmp - shm, work, tmp, shm)


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


@dataclass(slots=True)
class _Run:
    returncode: int
    started: bool  # the code started (else the launch is tried again)
    timed_out: bool
    seconds: float
    stdout: str
    stderr: str
    complete: bool  # /work came back whole
    stage: Path | None  # where it was unpacked (None: it was empty)


def available() -> bool:
    if shutil.which("bwrap") is None or not Path(PYTHON).exists():
        return False
    try:
        seccomp.bpf()
    except (ImportError, OSError):
        return False
    return True


def new_workdir() -> Path:
    """A fresh folder for one sandbox session; each run sees its files in /work and leaves
    there what /work holds when it ends."""
    return Path(tempfile.mkdtemp(prefix="kaiyuan-sandbox-"))


def run_python(code: str, *, limits: Limits = Limits(), work: Path | None = None) -> Result:
    """Run ``code`` with ``python3 -I`` in /work, which starts with the files of ``work`` (from
    :func:`new_workdir`) and is copied back there when the code ends (folders and regular
    files, up to ``limits.work_bytes``: what does not fit in /work is lost; if the sandbox
    sends back nothing whole, ``work`` is left as it was). Without ``work``, the code starts in
    an empty /work and only the list of its files comes back."""
    if not available():
        raise SandboxUnavailable(
            "the code sandbox needs bubblewrap (`apt-get install bubblewrap`, done by "
            "`make install`), libseccomp (`apt-get install libseccomp2`) and /usr/bin/python3"
        )
    own = work is None
    work = work or new_workdir()
    try:
        stdin = _pack(work)
        try:
            for attempt in range(LAUNCH_ATTEMPTS):
                run = _launch(code, stdin, limits)
                if run.started:
                    break
                if run.stage is not None:
                    shutil.rmtree(run.stage, ignore_errors=True)
                # The kernel frees a finished sandbox's namespaces and process count a moment
                # after it exits, so a burst of runs can be refused (EAGAIN) before the code
                # even starts, by bwrap or by the launcher.
                time.sleep(0.05 * 2**attempt * (1 + random.random()))  # noqa: S311
            else:
                reason = run.stderr.strip().splitlines()
                raise SandboxUnavailable(
                    "the code sandbox could not start "
                    f"({reason[0] if reason else 'no reason given'})"
                )
        finally:
            if stdin is not None:
                os.close(stdin)
        if run.complete:
            _replace(work, run.stage)
        code_ = run.returncode
        return Result(
            exit_code=None if run.timed_out else (code_ if code_ >= 0 else 128 - code_),
            stdout=run.stdout,
            stderr=run.stderr,
            timed_out=run.timed_out,
            seconds=run.seconds,
            files=_files(work, limits.max_files),
            signal=None if run.timed_out else _signal(code_),
        )
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


def _launch(code: str, stdin: int | None, limits: Limits) -> _Run:
    """One try: bwrap (as nobody when we are root) runs the launcher, which runs the code."""
    as_root = os.geteuid() == 0
    rlimits = _rlimits(limits, as_root)
    with contextlib.ExitStack() as ours:
        status_read, status_write = os.pipe()
        ours.callback(os.close, status_read)
        out, err, back = (_memory_file(name, b"", ours) for name in ("stdout", "stderr", "work"))
        with contextlib.ExitStack() as theirs:  # what bwrap reads: closed once it has them
            theirs.callback(os.close, status_write)
            launcher = _memory_file("launch.py", LAUNCHER.encode(), theirs)
            script = _memory_file("main.py", code.encode(errors="surrogatepass"), theirs)
            bpf = _memory_file("seccomp", seccomp.bpf(), theirs)
            arguments = _arguments(limits, status_write, bpf, launcher, script)
            args = _memory_file("args", b"".join(a.encode() + b"\0" for a in arguments), theirs)
            drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
            command = [*(drop if as_root else []), "bwrap", "--args", str(args), "--"]
            if stdin is not None:
                os.lseek(stdin, 0, os.SEEK_SET)
            started = time.monotonic()
            process = subprocess.Popen(
                [*command, *_launcher_command(limits, back)],
                stdin=subprocess.DEVNULL if stdin is None else stdin,
                stdout=out,
                stderr=err,
                env={"PATH": "/usr/bin:/bin"},
                start_new_session=True,
                pass_fds=(status_write, back, launcher, script, bpf, args),
                preexec_fn=lambda: _limit(rlimits),
            )
        killed = not _wait(process, limits.wall_seconds + GRACE_SECONDS)
        if killed:  # the launcher did not stop the code: stop it all
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        seconds = time.monotonic() - started
        returned = None if killed else _unpack(back, limits.budget().work)
        # bwrap reports the launcher's exit only if it set the sandbox up; the launcher exits
        # with 75 and sends nothing back if it could not start the code.
        ran = b'"exit-code"' in os.read(status_read, 4096)
        refused = process.returncode == 75 and returned is None
        return _Run(
            returncode=process.returncode,
            started=killed or (ran and not refused),
            timed_out=killed or (returned is not None and returned[0]),
            seconds=seconds,
            stdout=_read(out, limits.max_output),
            stderr=_read(err, limits.max_output),
            complete=returned is not None,
            stage=None if returned is None else returned[1],
        )


def _wait(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Whether the process ended within ``timeout``; as soon as it does (``Popen.wait`` with a
    timeout polls, up to 50 ms late)."""
    pidfd = os.pidfd_open(process.pid)  # not reaped yet: the pid is still the process's
    try:
        # poll, not select: a busy server's descriptors run past select's limit of 1024
        waiting = select.poll()
        waiting.register(pidfd, select.POLLIN)
        ended = bool(waiting.poll(max(0, math.ceil(timeout * 1000))))
    finally:
        os.close(pidfd)
    if ended:
        process.wait()
    return ended


def _arguments(limits: Limits, status: int, bpf: int, launcher: int, script: int) -> list[str]:
    """bwrap's options, read from a file descriptor (``--args``), so that bwrap's command line,
    which is pid 1's inside, is only ``bwrap --args N -- python3 ... launch.py``."""
    budget = limits.budget()
    return [
        "--unshare-all",  # user, pid, net, ipc, uts, cgroup namespaces
        "--unshare-user",  # explicit, for --disable-userns
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--json-status-fd", str(status),
        "--seccomp", str(bpf),
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/lib", "/lib",
        "--symlink", "usr/lib64", "/lib64",
        "--symlink", "usr/bin", "/bin",
        "--proc", "/proc",
        "--dev", "/dev",
        "--remount-ro", "/dev",  # its tmpfs has no size cap
        "--size", str(budget.shm), "--tmpfs", "/dev/shm",  # noqa: S108
        "--size", str(budget.tmp), "--tmpfs", "/tmp",  # noqa: S108 (the sandbox's own)
        "--size", str(budget.work), "--tmpfs", "/work",
        "--perms", "0444", "--ro-bind-data", str(launcher), "/sandbox/launch.py",
        "--perms", "0444", "--ro-bind-data", str(script), "/sandbox/main.py",
        "--remount-ro", "/",  # the sandbox's own root: nothing new can appear in it
        "--chdir", "/work",
        "--hostname", "sandbox",
        "--setenv", "PATH", "/usr/bin:/bin",
        "--setenv", "HOME", "/work",
        "--setenv", "LANG", "C.UTF-8",
        "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
    ]  # fmt: skip


def _launcher_command(limits: Limits, back: int) -> list[str]:
    """What bwrap runs (bwrap takes it from its own command line, not from ``--args``)."""
    numbers = (back, limits.wall_seconds, limits.file_bytes, limits.budget().work, MAX_ENTRIES)
    return [PYTHON, "-I", "-S", "/sandbox/launch.py", *map(str, numbers)]


def _memory_file(name: str, data: bytes, closer: contextlib.ExitStack) -> int:
    """A memory file holding ``data``, read from its start; ``closer`` closes it. Inside the
    sandbox its link in /proc/*/fd reads ``/memfd:NAME (deleted)``: no host path."""
    fd = os.memfd_create(name)
    closer.callback(os.close, fd)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _rlimits(limits: Limits, as_root: bool) -> list[tuple[int, int]]:
    """Limits inherited by bwrap and everything it starts. The file size limit here bounds the
    launcher's tar of /work; the launcher sets ``file_bytes`` for the code."""
    budget = limits.budget()
    ship = max(_ship_bytes(budget.work), limits.file_bytes)
    # RLIMIT_NPROC counts every process of the (real) user: as root the sandbox runs as nobody,
    # whose processes are the sandbox's own; otherwise the user's current count is the base.
    nproc = (0 if as_root else _processes_of(os.getuid())) + limits.processes
    return [
        (resource.RLIMIT_AS, budget.address_space),
        (resource.RLIMIT_CPU, limits.cpu_seconds),
        (resource.RLIMIT_FSIZE, ship),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NPROC, nproc),
    ]


def _limit(rlimits: list[tuple[int, int]]) -> None:
    """In the child, before exec."""
    for which, value in rlimits:
        hard = value + 1 if which == resource.RLIMIT_CPU else value  # SIGXCPU, then SIGKILL
        resource.setrlimit(which, (value, hard))


def _ship_bytes(work: int) -> int:
    """The largest tar of a /work of ``work`` bytes: its data, a header, pax headers and
    padding per entry, the end blocks and the trailer."""
    return work + MAX_ENTRIES * 4096 + 64 * 1024


def _pack(work: Path) -> int | None:
    """The folders and regular files of ``work`` as a tar in a memory file (None: empty)."""
    if not any(os.scandir(work)):
        return None
    fd = os.memfd_create("work")
    with os.fdopen(os.dup(fd), "wb") as sink, tarfile.open(fileobj=sink, mode="w") as tar:
        for root, dirs, files in os.walk(work):
            for name in dirs + files:
                path = Path(root, name)
                try:
                    mode = path.lstat().st_mode
                except OSError:
                    continue
                if stat.S_ISDIR(mode) or stat.S_ISREG(mode):  # no links, no devices
                    tar.add(path, arcname=str(path.relative_to(work)), recursive=False)
    return fd


def _unpack(back: int, limit: int) -> tuple[bool, Path | None] | None:
    """What the launcher sent: whether the code timed out, and /work unpacked in a new folder
    (None: it was empty). None when the stream is incomplete, too large or malformed."""
    size = os.fstat(back).st_size
    if size > _ship_bytes(limit):
        return None
    end = TRAILER.search(os.pread(back, 64, max(0, size - 64)))
    if end is None:
        return None
    timed_out = end.group(1) == b"1"
    if size == len(end.group(0)):
        return timed_out, None
    stage = Path(tempfile.mkdtemp(prefix="kaiyuan-run-"))
    try:
        with os.fdopen(os.dup(back), "rb") as source:
            source.seek(0)
            _extract(source, stage, limit)
    except (tarfile.TarError, OSError, ValueError):
        shutil.rmtree(stage, ignore_errors=True)
        return None
    return timed_out, stage


def _extract(source: Any, stage: Path, limit: int) -> None:
    """Folders and regular files only, inside ``stage``, ``limit`` bytes and MAX_ENTRIES at
    most (else ValueError)."""
    count = total = 0
    with tarfile.open(fileobj=source, mode="r:") as tar:
        for member in tar:
            count, total = count + 1, total + max(member.size, 0)
            if count > MAX_ENTRIES or total > limit:
                raise ValueError("the sandbox sent back more than /work can hold")
            name = PurePosixPath(member.name)
            if name.is_absolute() or ".." in name.parts or not name.parts:
                continue
            target = stage.joinpath(*name.parts)
            try:
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                elif member.isreg() and (data := tar.extractfile(member)) is not None:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    mode = 0o755 if member.mode & 0o100 else 0o644
                    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                    with os.fdopen(os.open(target, flags, mode), "wb") as out:
                        shutil.copyfileobj(data, out)
                    os.utime(target, (member.mtime, member.mtime))
            except (OSError, ValueError, OverflowError):  # a clash, a NUL, a time out of range
                continue


def _replace(work: Path, stage: Path | None) -> None:
    """Make ``work`` hold what ``stage`` holds."""
    for entry in list(os.scandir(work)):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)
    if stage is not None:
        for entry in list(os.scandir(stage)):
            shutil.move(entry.path, work / entry.name)
        shutil.rmtree(stage, ignore_errors=True)


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


def _read(fd: int, limit: int) -> str:
    data = os.pread(fd, limit * 4 + 4, 0)
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
