"""Start the simulator and the exporter as real processes, and talk to them over HTTP."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition, timeout: float = 20.0, interval: float = 0.05, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, OSError):
            if condition():
                return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")


@dataclass
class Process:
    """A child process with its output captured to a file, stopped with SIGTERM."""

    popen: subprocess.Popen[bytes]
    log_path: Path
    url: str
    stopped: bool = field(default=False)

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise
        finally:
            self.stopped = True


def _spawn(argv: Sequence[str], log_path: Path, url: str, env: dict[str, str] | None) -> Process:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("EVOTIC_")}
    full_env.update(env or {})
    full_env["PYTHONUNBUFFERED"] = "1"
    handle = log_path.open("wb")
    popen = subprocess.Popen(
        [sys.executable, *argv], stdout=handle, stderr=subprocess.STDOUT, env=full_env, cwd=ROOT
    )
    handle.close()
    return Process(popen, log_path, url)


@contextlib.contextmanager
def simulator(tmp_path: Path, *args: str, token: str = "sim-token") -> Iterator[Process]:
    port = free_port()
    proc = _spawn(
        ["-m", "simulator", "--listen-address", f"127.0.0.1:{port}", "--token", token,
         *args],
        tmp_path / f"simulator-{port}.log", f"http://127.0.0.1:{port}", None,
    )  # fmt: skip
    try:
        wait_until(lambda: httpx.get(f"{proc.url}/_simulator/state").status_code == 200,
                   what="the simulator")  # fmt: skip
        yield proc
    finally:
        proc.stop()


@contextlib.contextmanager
def exporter(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, wait_ready: bool = True
) -> Iterator[Process]:
    port = free_port()
    proc = _spawn(
        ["-m", "exporter", "--web.listen-address", f"127.0.0.1:{port}", "--log.format", "json",
         *args],
        tmp_path / f"exporter-{port}.log", f"http://127.0.0.1:{port}", env,
    )  # fmt: skip
    try:
        if wait_ready:
            wait_until(lambda: httpx.get(f"{proc.url}/readyz").status_code == 200,
                       what=f"the exporter to be ready; output:\n{proc.output}")  # fmt: skip
        yield proc
    finally:
        if not proc.stopped:
            proc.stop()
