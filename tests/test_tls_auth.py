"""The exporter as a process serving HTTPS with basic auth and client certificates."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bcrypt
import httpx
import pytest

from .processes import ROOT, Process, exporter, wait_until
from .test_webconfig import Pki, make_pki

pytestmark = pytest.mark.e2e

USER = "prometheus"
PASSWORD = "scrape-Secret-4e2b"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
HEADERS = {
    "X-Frame-Options": "deny",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'",
}
CHALLENGE = 'Basic realm="evotic-exporter"'


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def https(proc: Process) -> str:
    return proc.url.replace("http://", "https://")


def _tls_section(pki: Pki, extra: str = "") -> str:
    return (f"tls_server_config:\n  cert_file: {pki.server_cert}\n"
            f"  key_file: {pki.server_key}\n{extra}")  # fmt: skip


@contextlib.contextmanager
def tls_exporter(directory: Path, web_config: str, ready: ssl.SSLContext) -> Iterator[Process]:
    """The demo exporter serving ``web_config``, once ``/readyz`` answers over HTTPS."""
    path = directory / f"web-{time.monotonic_ns()}.yml"
    path.write_text(web_config, encoding="utf-8")
    with exporter(directory, "--demo", "--poll.interval", "1", "--web.config.file", str(path),
                  wait_ready=False) as proc:  # fmt: skip

        def is_ready() -> bool:
            assert proc.popen.poll() is None, f"the exporter exited:\n{proc.output()}"
            return httpx.get(f"{https(proc)}/readyz", verify=ready, timeout=5).status_code == 200

        wait_until(is_ready, what=f"the exporter to be ready over HTTPS; output:\n{proc.output}")
        yield proc


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Process]:
    headers = "".join(f'    {name}: "{value}"\n' for name, value in HEADERS.items())
    web_config = (_tls_section(pki) + "http_server_config:\n  headers:\n" + headers
                  + f"basic_auth_users:\n  {USER}: '{HASH}'\n")  # fmt: skip
    with tls_exporter(tmp_path_factory.mktemp("secured"), web_config,
                      pki.client_context()) as proc:  # fmt: skip
        yield proc


def _get(proc: Process, path: str, context: ssl.SSLContext, **kwargs: object) -> httpx.Response:
    return httpx.get(f"{https(proc)}{path}", verify=context, timeout=10, **kwargs)  # type: ignore[arg-type]


def test_basic_auth_guards_metrics_and_leaves_probes_open(secured: Process, pki: Pki) -> None:
    ctx = pki.client_context()
    ok = _get(secured, "/metrics", ctx, auth=(USER, PASSWORD))
    assert ok.status_code == 200
    assert "# HELP evotic_up " in ok.text
    assert _get(secured, "/", ctx, auth=(USER, PASSWORD)).status_code == 200
    refused = {
        "wrong password": _get(secured, "/metrics", ctx, auth=(USER, "wrong")),
        "unknown user": _get(secured, "/metrics", ctx, auth=("nobody", PASSWORD)),
        "no header": _get(secured, "/metrics", ctx),
        "malformed header": _get(secured, "/metrics", ctx,
                                 headers={"Authorization": "Basic !!!not base64"}),
        "other scheme": _get(secured, "/metrics", ctx, headers={"Authorization": "Bearer x"}),
        "landing page": _get(secured, "/", ctx),
    }  # fmt: skip
    for case, response in refused.items():
        assert response.status_code == 401, case
        assert response.headers["www-authenticate"] == CHALLENGE, case
        assert "evotic_up" not in response.text, case
    head = httpx.head(f"{https(secured)}/metrics", verify=ctx, timeout=10)
    assert head.status_code == 401
    for probe in ("/healthz", "/readyz"):
        response = _get(secured, probe, ctx)
        assert response.status_code == 200, probe
        assert response.text == "ok\n", probe


def test_security_headers_are_on_every_response(secured: Process, pki: Pki) -> None:
    ctx = pki.client_context()
    responses = [
        _get(secured, "/metrics", ctx, auth=(USER, PASSWORD)),
        _get(secured, "/metrics", ctx),
        _get(secured, "/healthz", ctx),
        _get(secured, "/nothing-here", ctx),
    ]
    assert [r.status_code for r in responses] == [200, 401, 200, 404]
    for response in responses:
        for name, value in HEADERS.items():
            assert response.headers[name] == value, (response.url, name)


def test_tls12_is_accepted_by_default(secured: Process, pki: Pki) -> None:
    ctx = pki.client_context(max_version=ssl.TLSVersion.TLSv1_2)
    with httpx.Client(verify=ctx, timeout=10) as client:
        response = client.get(f"{https(secured)}/healthz")
        assert response.status_code == 200
        ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
        assert ssl_object.version() == "TLSv1.2"


def test_plain_http_on_the_tls_port_gets_400_with_a_hint(secured: Process, pki: Pki) -> None:
    host, port = secured.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(b"GET /metrics HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n")
        answer = b""
        while not answer.endswith(b"http://.\n") and (chunk := raw.recv(4096)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer
    assert answer.endswith(b"\r\n\r\nThis port speaks HTTPS: use https:// instead of http://.\n")
    plain = httpx.get(f"{secured.url}/healthz", timeout=10)
    assert plain.status_code == 400
    assert plain.text == "This port speaks HTTPS: use https:// instead of http://.\n"
    # A TLS scrape right after is served as ever.
    scraped = _get(secured, "/metrics", pki.client_context(), auth=(USER, PASSWORD))
    assert scraped.status_code == 200
    assert "# HELP evotic_up " in scraped.text


def _scrapes(proc: Process, context: ssl.SSLContext, count: int) -> list[int]:
    def one(_: int) -> int:
        return _get(proc, "/metrics", context, auth=(USER, PASSWORD)).status_code

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def test_silent_tls_clients_do_not_stall_others(secured: Process, pki: Pki) -> None:
    host, port = secured.url.removeprefix("http://").split(":")
    ctx = pki.client_context()
    first = socket.create_connection((host, int(port)))  # connects, never sends a ClientHello
    opened = time.monotonic()
    silent = []
    try:
        started = time.monotonic()
        assert _scrapes(secured, ctx, 8) == [200] * 8
        silent = [socket.create_connection((host, int(port))) for _ in range(30)]
        assert _scrapes(secured, ctx, 8) == [200] * 8
        assert time.monotonic() - started < 10
        # The handshake deadline (10 s, not asyncio's 60 s) frees the silent client's socket.
        first.settimeout(30)
        with contextlib.suppress(ConnectionResetError):
            assert first.recv(1) == b""
        assert time.monotonic() - opened < 25
    finally:
        for sock in [first, *silent]:
            sock.close()


def test_no_tracebacks_or_password_in_the_output(secured: Process) -> None:
    output = secured.output()
    assert "Traceback" not in output
    assert PASSWORD not in output
    assert '"tls": true' in output
    assert '"basic_auth": true' in output


def test_min_version_tls13_refuses_a_tls12_client(tmp_path: Path, pki: Pki) -> None:
    with tls_exporter(tmp_path, _tls_section(pki, "  min_version: TLS13\n"),
                      pki.client_context()) as proc:  # fmt: skip
        assert _get(proc, "/metrics", pki.client_context()).status_code == 200
        with pytest.raises(httpx.ConnectError):
            _get(proc, "/metrics", pki.client_context(max_version=ssl.TLSVersion.TLSv1_2))


def test_a_verified_client_certificate_is_required(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, pki: Pki
) -> None:
    stranger = make_pki(tmp_path_factory.mktemp("other-ca"))
    web_config = _tls_section(pki, f"  client_ca_file: {pki.ca}\n"
                                   "  client_auth_type: RequireAndVerifyClientCert\n")  # fmt: skip
    with tls_exporter(tmp_path, web_config, pki.client_context(with_cert=True)) as proc:
        response = _get(proc, "/metrics", pki.client_context(with_cert=True))
        assert response.status_code == 200
        assert "# HELP evotic_up " in response.text
        # With TLS 1.3 the client may only learn of the refusal on its first read.
        with pytest.raises(httpx.TransportError):
            _get(proc, "/metrics", pki.client_context())
        other = pki.client_context()
        other.load_cert_chain(stranger.client_cert, stranger.client_key)
        with pytest.raises(httpx.TransportError):
            _get(proc, "/metrics", other)
        assert "Traceback" not in proc.output()


def test_a_client_certificate_if_given_is_verified(tmp_path: Path, pki: Pki) -> None:
    web_config = _tls_section(pki, f"  client_ca_file: {pki.ca}\n"
                                   "  client_auth_type: VerifyClientCertIfGiven\n")  # fmt: skip
    with tls_exporter(tmp_path, web_config, pki.client_context()) as proc:
        assert _get(proc, "/metrics", pki.client_context()).status_code == 200
        assert _get(proc, "/metrics", pki.client_context(with_cert=True)).status_code == 200


def _start_and_fail(tmp_path: Path, web_config: str, *, via_env: bool = False) -> str:
    path = tmp_path / "web.yml"
    path.write_text(web_config, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVOTIC_")}
    args = [sys.executable, "-m", "exporter", "--demo", "--web.listen-address", "127.0.0.1:0"]
    if via_env:
        env["EVOTIC_WEB_CONFIG_FILE"] = str(path)
    else:
        args += ["--web.config.file", str(path)]
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert done.returncode == 2, done
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(
        f"evotic-exporter: invalid setting EVOTIC_WEB_CONFIG_FILE (--web.config.file): {path}: "
    )
    return lines[0]


def test_a_plaintext_password_stops_start_up_without_being_printed(tmp_path: Path) -> None:
    line = _start_and_fail(tmp_path, f"basic_auth_users:\n  {USER}: {PASSWORD}\n")
    assert f"'{USER}'" in line
    assert "not a bcrypt hash" in line
    assert PASSWORD not in line
    line = _start_and_fail(tmp_path, f"basic_auth_users:\n  {USER}: {PASSWORD}\n", via_env=True)
    assert PASSWORD not in line


def test_an_unknown_key_stops_start_up(tmp_path: Path) -> None:
    line = _start_and_fail(tmp_path, "tls_server_config: {}\nbasic_auth: {}\n")
    assert "basic_auth: unknown key" in line


def test_a_missing_certificate_stops_start_up(tmp_path: Path, pki: Pki) -> None:
    missing = tmp_path / "missing.pem"
    line = _start_and_fail(tmp_path, f"tls_server_config:\n  cert_file: {missing}\n"
                                     f"  key_file: {pki.server_key}\n")  # fmt: skip
    assert f"tls_server_config.cert_file: cannot read {missing}" in line
