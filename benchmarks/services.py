"""The processes a benchmark run starts: simulator, exporter, nginx and the reference.

All of them listen on 127.0.0.1 only, on free ports, log to files in the run's work
directory, and are stopped (SIGTERM, then SIGKILL) when the run ends or fails.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
# A fresh token per run, shared by the simulator and the exporters it starts.
TOKEN = secrets.token_hex(12)
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if condition():
                return
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


@dataclass
class Service:
    """A started process: where it listens, where it logs, what it has cost so far."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log: Path
    cleanup: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _status(self) -> dict[str, str]:
        lines = Path(f"/proc/{self.popen.pid}/status").read_text().splitlines()
        return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}

    def peak_rss_bytes(self) -> int:
        """VmHWM: the most resident memory the process has had (the kernel's high-water mark)."""
        return int(self._status()["VmHWM"].split()[0]) * 1024

    def rss_bytes(self) -> int:
        return int(self._status()["VmRSS"].split()[0]) * 1024

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the process so far."""
        fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{tail}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.cleanup is not None:
            shutil.rmtree(self.cleanup, ignore_errors=True)


def runtime_site(workdir: Path) -> Path:
    """A directory of links to what ``pip install .`` would install, and nothing else.

    The exporter is measured as the image ships it: without the test tools of this
    environment, some of which change what its libraries import (httpx imports its command
    line's click and Pygments whenever they are installed: 1.7 MB more resident).
    """
    site = workdir / "runtime-site"
    if site.exists():
        return site
    site.mkdir()
    wanted, seen = ["evotic-exporter"], set()
    while wanted:
        name = canonicalize_name(wanted.pop())
        if name in seen:
            continue
        seen.add(name)
        dist = importlib.metadata.distribution(name)
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                wanted.append(requirement.name)
        if name == "evotic-exporter":
            continue  # run from this checkout (the working directory), metadata and all
        for top in {Path(str(file)).parts[0] for file in dist.files or []}:
            source = Path(str(dist.locate_file(top)))
            if top not in ("..", "__pycache__") and source.exists() and not (site / top).exists():
                (site / top).symlink_to(source)
    return site


def _spawn(
    name: str, argv: Sequence[str], workdir: Path, port: int, *, runtime_only: bool = False
) -> Service:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVOTIC_")}
    env["PYTHONUNBUFFERED"] = "1"
    if runtime_only:
        # -S: no site-packages of this environment; the links are the whole of it.
        argv = [argv[0], "-S", *argv[1:]]
        env["PYTHONPATH"] = str(runtime_site(workdir))
    log = workdir / f"{name}.log"
    with log.open("wb") as handle:
        popen = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    return Service(name, popen, port, log)


def _started(service: Service, ready: Callable[[], bool], timeout: float, what: str) -> Service:
    """``service`` once ``ready()``; stopped, with the error raised, if it exits first or is not
    ready within ``timeout`` seconds."""

    def alive_and_ready() -> bool:
        service.check_alive()
        return ready()

    try:
        wait_until(alive_and_ready, timeout, what)
    except BaseException:
        service.stop()
        raise
    return service


def _answers(service: Service, path: str) -> Callable[[], bool]:
    return lambda: http_status(f"{service.url}{path}") == 200


def _listens(service: Service) -> Callable[[], bool]:
    def listening() -> bool:
        with socket.create_connection(("127.0.0.1", service.port), timeout=1):
            return True

    return listening


@contextlib.contextmanager
def running(service: Service) -> Iterator[Service]:
    try:
        yield service
    finally:
        service.stop()


def simulator(
    workdir: Path,
    servers: int,
    *,
    paginate: bool,
    per_page: int,
    latency: float = 0.0,
    token: str = TOKEN,
    seed: int | None = None,
    name: str | None = None,
) -> Service:
    """A simulator process; ``seed`` (default: the simulator's) picks which fleet it serves."""
    port = free_port()
    argv = [sys.executable, "-m", "simulator", "--listen-address", f"127.0.0.1:{port}",
            "--servers", str(servers), "--token", token, "--latency", str(latency)]  # fmt: skip
    if paginate:
        argv += ["--paginate", "--per-page", str(per_page)]
    if seed is not None:
        argv += ["--seed", str(seed)]
    service = _spawn(name or f"simulator-{servers}", argv, workdir, port)
    return _started(service, _answers(service, "/_simulator/state"), 120, "the simulator")


def exporter(
    workdir: Path, api_url: str, *, interval: float, name: str, extra: Sequence[str] = ()
) -> Service:
    """The exporter against ``api_url``; returns once ``/readyz`` says its first poll is in."""
    return _exporter(workdir, ["--api.url", api_url, "--api.token", TOKEN, *extra],
                     interval=interval, name=name)  # fmt: skip


def accounts_exporter(workdir: Path, config_file: Path, *, interval: float, name: str) -> Service:
    """The exporter serving the accounts ``config_file`` names, each polling every ``interval``
    seconds; returns once ``/readyz`` says every account's first poll is in."""
    return _exporter(workdir, ["--config.file", str(config_file)], interval=interval, name=name)


def _exporter(workdir: Path, args: Sequence[str], *, interval: float, name: str) -> Service:
    port = free_port()
    argv = [sys.executable, "-m", "exporter", "--web.listen-address", f"127.0.0.1:{port}",
            "--poll.interval", str(interval),
            # The smallest stale-after the exporter accepts: the data never turns stale
            # during a measurement.
            "--poll.stale-after", str(2 * interval),
            "--log.format", "json", *args]  # fmt: skip
    service = _spawn(name, argv, workdir, port, runtime_only=True)
    return _started(service, _answers(service, "/readyz"), 600, f"{name} to be ready")


def floor(workdir: Path, plain: bytes, packed: bytes) -> Service:
    """The exporter's HTTP server serving ``plain`` and ``packed`` from a bare app
    (``floor.py``), with only the libraries the exporter installs."""
    files = workdir / "floor"
    files.mkdir(exist_ok=True)
    (files / "plain").write_bytes(plain)
    (files / "gzip").write_bytes(packed)
    port = free_port()
    argv = [sys.executable, str(HERE / "floor.py"), str(port), str(files / "plain"),
            str(files / "gzip")]  # fmt: skip
    service = _spawn("floor", argv, workdir, port, runtime_only=True)
    return _started(service, _answers(service, "/"), 60, "the floor server")


def reference(workdir: Path, api_url: str, servers: int) -> Service:
    """The prometheus_client reference; it listens only once its first poll is done."""
    port = free_port()
    argv = [sys.executable, str(HERE / "reference_exporter.py"), "--api-url", api_url,
            "--token", TOKEN, "--port", str(port)]  # fmt: skip
    service = _spawn(f"reference-{servers}", argv, workdir, port)
    return _started(service, _listens(service), 900, "the reference exporter")


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes auto;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 65;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    types {{ }}
    default_type "text/plain; version=0.0.4; charset=utf-8";
    # The payload is compressed once, beforehand: nginx only picks the file.
    gzip off;
    gzip_static on;
    etag off;
    server {{
        listen 127.0.0.1:{port};
        location = /metrics {{ alias {dir}/metrics; }}
        # /probe?target=NAME: the file of that name, as the exporter's /probe serves it.
        location = /probe {{ alias {dir}/probe/$arg_target; }}
    }}
}}
"""


def nginx(
    workdir: Path,
    plain: bytes = b"",
    compressed: bytes = b"",
    probes: Mapping[str, tuple[bytes, bytes]] | None = None,
) -> Service:
    """nginx serving ``plain`` at ``/metrics``, and ``compressed`` to clients that accept gzip;
    ``probes`` maps a target name to its plain and gzip answers at ``/probe?target=NAME``.

    Its files live in a directory of their own under the system's temporary directory:
    nginx's workers drop to an unprivileged user when started as root, and the run's work
    directory may sit somewhere that user cannot read (pytest's, for one). ``Service.stop``
    removes it.
    """
    directory = Path(tempfile.mkdtemp(prefix="evotic-benchmark-nginx-"))
    directory.chmod(0o755)
    files = {"metrics": plain, "metrics.gz": compressed}
    for target, (target_plain, target_compressed) in (probes or {}).items():
        files[f"probe/{target}"] = target_plain
        files[f"probe/{target}.gz"] = target_compressed
    (directory / "probe").mkdir()
    (directory / "probe").chmod(0o755)
    for name, data in files.items():
        (directory / name).write_bytes(data)
        (directory / name).chmod(0o644)
    port = free_port()
    conf = directory / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=directory, port=port))
    argv = [NGINX, "-p", str(directory), "-c", str(conf), "-e", str(directory / "nginx-error.log")]
    service = _spawn("nginx", argv, workdir, port)
    service.cleanup = directory
    return _started(service, _listens(service), 30, "nginx")
