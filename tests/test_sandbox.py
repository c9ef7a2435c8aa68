"""The code sandbox against the escape attempts of security guide T17, run for real in
bubblewrap: every attempt fails or is killed, and the host is unaffected."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kaiyuan.tools.sandbox import Limits, new_workdir, run_python

pytestmark = pytest.mark.slow


def run(code: str, **limits: float) -> dict:
    return run_python(code, limits=Limits(**limits)).to_dict()  # type: ignore[arg-type]


def test_runs_code_and_lists_the_files_it_wrote() -> None:
    work = new_workdir()
    result = run_python(
        "import json\nprint(sum(range(10)))\nopen('out.json', 'w').write(json.dumps([1, 2]))\n"
        "import os; os.makedirs('sub'); open('sub/a.txt', 'w').write('x' * 5)",
        work=work,
    )
    assert result.exit_code == 0 and result.stdout == "45\n" and result.stderr == ""
    assert result.files == [{"path": "out.json", "bytes": 6}, {"path": "sub/a.txt", "bytes": 5}]
    assert (work / "out.json").read_text() == "[1, 2]"
    shutil.rmtree(work)


def test_errors_come_back_as_stderr_and_exit_status() -> None:
    result = run("raise ValueError('boom')")
    assert result["exit_code"] == 1 and "ValueError: boom" in result["stderr"]


def test_no_secrets_home_or_host_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAIYUAN_SECRET_TOKEN", "s3cr3t-value")
    code = """
import os
import shutil
print(sorted(os.environ))
print(sorted(os.listdir('/')))
for path in ['/root/.ssh/id_rsa', os.path.expanduser('~/.ssh/id_rsa'), '/etc/passwd',
             '/etc/shadow', '/proc/1/environ', '/proc/self/environ']:
    try:
        data = open(path, 'rb').read()
        print(path, 's3cr3t-value' in data.decode('latin-1'))
    except OSError as exc:
        print(path, 'refused', type(exc).__name__)
"""
    result = run(code)
    assert result["exit_code"] == 0, result["stderr"]
    assert "s3cr3t-value" not in result["stdout"] and "KAIYUAN" not in result["stdout"]
    lines = result["stdout"].splitlines()
    assert lines[0] == "['HOME', 'LANG', 'PATH', 'PWD', 'PYTHONDONTWRITEBYTECODE']"
    assert "'root'" not in lines[1] and "'etc'" not in lines[1] and "'home'" not in lines[1]
    for line in lines[2:]:
        assert line.endswith(("refused FileNotFoundError", "refused PermissionError", "False"))


def test_cannot_write_outside_its_work_folder() -> None:
    code = """
for path in ['/usr/evil', '/usr/lib/evil.py', '/evil', '/sandbox/main.py', '/proc/evil']:
    try:
        open(path, 'w').write('x')
        print(path, 'WROTE')
    except OSError as exc:
        print(path, type(exc).__name__)
"""
    result = run(code)
    assert "WROTE" not in result["stdout"], result["stdout"]
    assert not Path("/usr/evil").exists()


@pytest.fixture()
def api_port() -> Iterator[int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()
    yield server.getsockname()[1]
    assert accepted == []  # nothing from the sandbox ever connected
    server.close()


def test_no_network_not_even_the_hosts_loopback(api_port: int) -> None:
    code = f"""
import socket
for host, port in [('127.0.0.1', {api_port}), ('169.254.169.254', 80), ('10.0.0.1', 80),
                   ('1.1.1.1', 443)]:
    try:
        socket.create_connection((host, port), timeout=2)
        print(host, 'CONNECTED')
    except OSError as exc:
        print(host, type(exc).__name__)
try:
    socket.getaddrinfo('example.com', 80)
    print('DNS RESOLVED')
except OSError as exc:
    print('dns', type(exc).__name__)
"""
    result = run(code)
    assert result["exit_code"] == 0, result["stderr"]
    assert "CONNECTED" not in result["stdout"] and "RESOLVED" not in result["stdout"]


def test_a_fork_bomb_is_contained() -> None:
    code = """
import os
import shutil
children = 0
try:
    while True:
        if os.fork() == 0:
            import time; time.sleep(30)
            os._exit(0)
        children += 1
except OSError as exc:
    print('stopped after', children, type(exc).__name__)
"""
    result = run(code, wall_seconds=5, processes=16)
    assert "stopped after" in result["stdout"], result
    assert int(result["stdout"].split()[2]) < 16
    # the namespace dies with its init: no sleeping children remain on the host
    deadline = time.monotonic() + 5
    while _nobodys() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _nobodys() == []


def _nobodys() -> list[str]:
    return [p for p in os.listdir("/proc") if p.isdigit() and _uid(p) == 65534]


def _uid(pid: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def test_memory_cpu_time_file_size_and_output_are_capped() -> None:
    memory = run("x = bytearray(16 * 1024**3)")
    assert memory["exit_code"] != 0 and "MemoryError" in memory["stderr"]
    spin = run("while True: pass", cpu_seconds=1, wall_seconds=10)
    assert spin["signal"] in ("SIGXCPU", "SIGKILL") and spin["seconds"] < 5
    sleeper = run("import time; time.sleep(60)", wall_seconds=1)
    assert sleeper["timed_out"] and sleeper["exit_code"] is None and sleeper["seconds"] < 5
    big = run("open('big', 'wb').write(b'x' * (64 * 1024**2))", file_bytes=1024**2)
    assert big["exit_code"] != 0
    assert all(f["bytes"] <= 1024**2 for f in big["files"])
    flood = run("while True: print('y' * 1000)", wall_seconds=2, file_bytes=4 * 1024**2)
    assert flood["stdout"].endswith("[output truncated]") and len(flood["stdout"]) < 70_000


def test_a_burst_of_sandboxes_all_run() -> None:
    # The kernel releases a finished sandbox's namespaces and process count lazily, so a burst
    # used to fail with "Can't fork for pid 1" (EAGAIN) before the code ran; such launches are
    # retried, and a failure of the code itself is not.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda n: run(f"print({n} * 2)"), range(60)))
    assert [r["stdout"].strip() for r in results] == [str(n * 2) for n in range(60)]
    failing = run("import sys; print('bwrap: lookalike', file=sys.stderr); sys.exit(1)")
    assert failing["exit_code"] == 1 and failing["seconds"] < 5
