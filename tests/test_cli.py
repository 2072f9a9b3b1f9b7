"""The composition root in process: exit codes, files read once, and ``run()`` end to end.

``run()`` is started as a task in the test's own event loop with ``--demo`` (the simulator on a
socket of its own), found through its "listening" log line, scraped once over real HTTP and
stopped with a real SIGTERM to this process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from exporter import __version__
from exporter.api.models import Server
from exporter.api.network import ProxySettingError
from exporter.cli import main
from exporter.runtime.allocator import tune_allocator
from exporter.service.daemon import Service
from exporter.service.reload import Files
from exporter.settings.accounts import DEFAULT_ACCOUNT, api_route
from exporter.settings.loading import PROG, load
from exporter.settings.model import DEFAULT_PORT, OPTIONS, Settings
from exporter.web.config import WebConfig, load_web

from .processes import ROOT

CANARY = "canary-cli-token-61b0e2"
TIB = 2.0**40


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("EVOTIC_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def _restore_logging() -> Iterator[None]:
    """``run()`` sets up logging for the process; put back what the test session had."""
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {
        name: logger.level
        for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    yield
    structlog.configure(**config)
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, logger in logging.root.manager.loggerDict.items():
        if isinstance(logger, logging.Logger):
            logger.setLevel(levels.get(name, logging.NOTSET))


@pytest.fixture
def busy_address() -> Iterator[str]:
    """An address something else is already listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def _one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]


# ------------------------------------------------------------------ bad settings: exit code 2


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "EVOTIC_API_TOKEN (--api.token): a token is required"),
        (["--api.token", CANARY, "--poll.interval", "0"], "EVOTIC_POLL_INTERVAL (--poll.interval)"),
        (["--api.token", CANARY, "--api.token-file", "/etc/hostname"], "not both"),
        (["--api.token", CANARY, "--api.url", f"https://u:{CANARY}@host/"], "EVOTIC_API_URL"),
        (["--api.token-file", "/nonexistent/token"], "cannot read /nonexistent/token"),
        (["--api.token", CANARY, "--traffic.quota-file", "/nonexistent/quotas.yml"],
         "EVOTIC_TRAFFIC_QUOTA_FILE (--traffic.quota-file)"),
        (["--api.token", CANARY, "--web.config.file", "/nonexistent/web.yml"],
         "EVOTIC_WEB_CONFIG_FILE (--web.config.file)"),
        (["--demo", "--web.listen-address", "[::1]:70000"], "port 70000 is out of range 0-65535"),
        (["--api.token", CANARY, "--poll.stale-after", "90"],
         "EVOTIC_POLL_STALE_AFTER (--poll.stale-after): 90 s is less than twice --poll.interval "
         "(60 s); set at least 120 s"),
        (["--api.token", CANARY, "--api.ca-file", "/nonexistent/ca.pem"],
         "EVOTIC_API_CA_FILE (--api.ca-file): cannot read /nonexistent/ca.pem"),
        (["--api.token", CANARY, "--api.ca-file", "/etc/hostname"],
         "EVOTIC_API_CA_FILE (--api.ca-file): no PEM certificate in /etc/hostname"),
    ],
)  # fmt: skip
def test_main_exits_2_with_one_line_for_bad_settings(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    line = _one_line(err)
    assert line.startswith(f"{PROG}: invalid setting ")
    assert expected in line
    assert CANARY not in err


def test_a_bad_web_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: {CANARY}\n")
    assert main(["--api.token", "t0ken", "--web.config.file", str(web)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "EVOTIC_WEB_CONFIG_FILE" in line
    assert "basic_auth_users" in line
    assert CANARY not in line


def test_a_proxy_the_client_cannot_use_stops_the_start_up() -> None:
    settings = Settings(api_token=CANARY)
    with pytest.raises(ProxySettingError, match="HTTPS_PROXY: socks5:// proxies"):
        api_route(settings, {"HTTPS_PROXY": "socks5://proxy:1080"})
    # The demo's simulator is on this host, over plain HTTP: no proxy, whatever is set.
    demo = Settings(demo=True)
    assert api_route(demo, {"HTTPS_PROXY": "http://proxy:3128"}).proxy is None
    assert api_route(settings, {"HTTPS_PROXY": "http://proxy:3128"}).proxy is not None


def test_an_unknown_flag_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--api.token", CANARY, "--no.such-flag"])
    assert exited.value.code == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"{PROG}: unrecognized arguments: --no.such-flag")
    assert line.endswith("(see --help)")


def test_help_lists_every_flag_with_its_variable_and_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines at the terminal width
    for option in OPTIONS:
        default = Settings.model_fields[option.field].default
        shown = "none" if default is None else str(default).lower() if option.boolean else default
        entry = re.search(rf" {re.escape(option.flag)}( VALUE)? (?P<help>[^[]*)\[(?P<env>[^]]*)\]",
                          text)  # fmt: skip
        assert entry, option.flag
        assert entry["help"].strip() == option.help
        assert entry["env"].startswith(option.variable), entry["env"]
        assert entry["env"].endswith(f"; default: {shown}"), entry["env"]
    # The listen address's default as the README's settings table gives it, and no other.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    documented = re.search(r"\| `--web.listen-address` \| `([^`]*)` \|", readme)
    assert documented
    assert documented[1] == f"0.0.0.0:{DEFAULT_PORT}"
    assert f"default: {documented[1]}]" in text
    assert f"(:{DEFAULT_PORT})" not in text


# ------------------------------------------------------------------ load(): each file once


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often each file was read, by ``Path.read_text`` or ``Path.read_bytes``."""
    counted: dict[str, int] = {}

    def counting(original: Callable[..., Any]) -> Callable[..., Any]:
        def read(path: Path, *args: Any, **kwargs: Any) -> Any:
            counted[path.name] = counted.get(path.name, 0) + 1
            return original(path, *args, **kwargs)

        return read

    monkeypatch.setattr(Path, "read_text", counting(Path.read_text))
    monkeypatch.setattr(Path, "read_bytes", counting(Path.read_bytes))
    return counted


def test_load_reads_each_file_once_and_gets_the_numbers_right(
    tmp_path: Path, reads: dict[str, int]
) -> None:
    token = tmp_path / "token"
    token.write_text(f"{CANARY}\n")
    quotas = tmp_path / "quotas.yml"
    quotas.write_text(
        "default: 20TiB\n"
        "servers:\n"
        "  - id: '42'\n    quota: 1TiB\n"
        "  - hostname: 'db-*'\n    quota: {outgoing: 5TB}\n"
    )
    hashed = bcrypt.hashpw(b"pass", bcrypt.gensalt(4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(
        f"basic_auth_users:\n  prometheus: '{hashed}'\n"
        "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
    )
    loaded = load(["--api.token-file", str(token), "--traffic.quota-file", str(quotas),
                   "--traffic.quota-bytes", "1TB", "--web.config.file", str(web)])  # fmt: skip
    config = load_web(loaded.settings)
    assert reads == {"token": 1, "quotas.yml": 1, "web.yml": 1}

    assert loaded.settings.api_token_file == token
    for_server = loaded.accounts[DEFAULT_ACCOUNT].quotas.for_server
    assert for_server(Server(id="7", hostname="web-1")) == {"incoming": 20 * TIB,
                                                           "outgoing": 20 * TIB}  # fmt: skip
    assert for_server(Server(id="42", hostname="db-1")) == {"incoming": TIB, "outgoing": TIB}
    assert for_server(Server(id="8", hostname="db-2")) == {"incoming": 20 * TIB,
                                                          "outgoing": 5e12}  # fmt: skip
    assert config.auth is not None
    assert config.auth.users == {"prometheus"}
    assert dict(config.headers) == {"X-Content-Type-Options": "nosniff"}


def test_load_without_files_reads_nothing(reads: dict[str, int]) -> None:
    loaded = load(["--api.token", CANARY, "--traffic.quota-bytes", "5TB"])
    assert reads == {}
    assert loaded.accounts[DEFAULT_ACCOUNT].quotas.for_server(Server(id="1", hostname="a")) == {
        "incoming": 5e12, "outgoing": 5e12
    }  # fmt: skip
    assert load_web(loaded.settings) == WebConfig()


def test_tune_allocator_runs() -> None:
    tune_allocator()
    tune_allocator()  # and again: it only sets two parameters, the same each time


# ------------------------------------------------------------------ run(): end to end


def run(settings: Settings, files: Files) -> Coroutine[Any, Any, int]:
    return Service(settings, files).run()


def _log_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def _listening(capsys: pytest.CaptureFixture[str], task: asyncio.Task[int]) -> list[Any]:
    """The exporter's log lines up to and including "listening"."""
    seen: list[dict[str, Any]] = []
    for _ in range(1000):
        seen += _log_lines(capsys.readouterr().err)
        if any(line["event"] == "listening" for line in seen):
            return seen
        assert not task.done(), f"run() ended early with {task.result()}: {seen}"
        await asyncio.sleep(0.01)
    raise AssertionError(f"no 'listening' line within 10 s: {seen}")


async def _until(http: httpx.AsyncClient, path: str, status: int = 200) -> httpx.Response:
    for _ in range(1000):
        try:
            response = await http.get(path)
        except httpx.TransportError:
            response = None
        if response is not None and response.status_code == status:
            return response
        await asyncio.sleep(0.01)
    raise AssertionError(f"{path} did not answer {status} within 10 s")


@pytest.mark.usefixtures("_restore_logging")
def test_run_serves_the_demo_until_sigterm(capsys: pytest.CaptureFixture[str]) -> None:
    loaded = load(["--demo", "--web.listen-address", "127.0.0.1:0", "--poll.interval", "1",
                   "--log.format", "json"])  # fmt: skip

    async def scenario() -> tuple[int, str]:
        task = asyncio.create_task(run(loaded.settings, Files(loaded.accounts, WebConfig())))
        lines = await _listening(capsys, task)
        [listening] = [line for line in lines if line["event"] == "listening"]
        assert listening["demo"] is True
        assert listening["version"] == __version__
        host, _, port = listening["address"].rpartition(":")
        assert host == "127.0.0.1"
        assert int(port) > 0
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            assert (await _until(http, "/healthz")).text == "ok\n"
            assert (await _until(http, "/readyz")).text == "ok\n"
            metrics = await http.get("/metrics")
        assert metrics.status_code == 200
        os.kill(os.getpid(), signal.SIGTERM)
        code = await asyncio.wait_for(task, timeout=10)
        return code, metrics.text

    code, text = asyncio.run(scenario())
    assert code == 0
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert found[("evotic_up", ())] == 1
    assert found[("evotic_servers", ())] == 25
    assert found[("evotic_exporter_build_info", (("version", __version__),))] == 1
    # --demo without a quota setting gives every server a quota, so the quota panels show.
    quotas = [v for (name, _), v in found.items() if name == "evotic_server_traffic_quota_bytes"]
    assert len(quotas) == 2 * 25
    assert set(quotas) == {5 * TIB}
    events = [line["event"] for line in _log_lines(capsys.readouterr().err)]
    assert "shutting down" in events
    assert "first poll succeeded" in events


@pytest.mark.usefixtures("_restore_logging")
def test_an_ipv6_listen_address_is_logged_in_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    loaded = load(["--demo", "--web.listen-address", "[::1]:0", "--log.format", "json"])

    async def scenario() -> tuple[int, str, str]:
        task = asyncio.create_task(run(loaded.settings, Files(loaded.accounts, WebConfig())))
        lines = await _listening(capsys, task)
        [listening] = [line for line in lines if line["event"] == "listening"]
        address = listening["address"]
        # Written as logged, the address is a URL's authority that reaches the exporter.
        async with httpx.AsyncClient(base_url=f"http://{address}", timeout=5) as http:
            health = (await _until(http, "/healthz")).text
        os.kill(os.getpid(), signal.SIGTERM)
        return await asyncio.wait_for(task, timeout=10), address, health

    code, address, health = asyncio.run(scenario())
    assert code == 0
    assert address.startswith("[::1]:")
    assert int(address.removeprefix("[::1]:")) > 0
    assert health == "ok\n"


@pytest.mark.usefixtures("_restore_logging")
def test_files_open_to_other_users_are_warned_about_once_and_the_exporter_still_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    modes = {"token": 0o644, "web.yml": 0o646, "tls.key": 0o604, "quotas.yml": 0o666}
    for name, mode in modes.items():
        (tmp_path / name).write_text(CANARY if name == "token" else "{}\n")
        (tmp_path / name).chmod(mode)
    loaded = load(["--api.token-file", str(tmp_path / "token"),
                   "--api.url", "http://127.0.0.1:9/api/v1", "--poll.interval", "1",
                   "--web.config.file", str(tmp_path / "web.yml"),
                   "--traffic.quota-file", str(tmp_path / "quotas.yml"),
                   "--web.listen-address", "127.0.0.1:0", "--log.format", "json"])  # fmt: skip
    # The key as load_web would name it from a web configuration file with TLS.
    web = WebConfig(key_file=tmp_path / "tls.key")

    async def scenario() -> tuple[int, list[dict[str, Any]]]:
        task = asyncio.create_task(run(loaded.settings, Files(loaded.accounts, web)))
        lines = await _listening(capsys, task)
        # A poll reads the token file again and fails on the closed port: no second warning.
        for _ in range(1000):
            if any(line["event"] == "poll failed" for line in lines):
                break
            await asyncio.sleep(0.01)
            lines += _log_lines(capsys.readouterr().err)
        os.kill(os.getpid(), signal.SIGTERM)
        code = await asyncio.wait_for(task, timeout=10)
        return code, lines + _log_lines(capsys.readouterr().err)

    code, lines = asyncio.run(scenario())
    assert code == 0
    warned = [
        (line["level"], line["file"], line["path"], line["mode"], line["others"], line["fix"])
        for line in lines
        if line["event"] == "file open to other users"
    ]
    assert warned == [
        ("warning", "token file", f"{tmp_path}/token", "0644", "read",
         f"chmod o-rwx {tmp_path}/token"),
        ("warning", "web configuration file", f"{tmp_path}/web.yml", "0646", "read and write",
         f"chmod o-rwx {tmp_path}/web.yml"),
        ("warning", "TLS key file", f"{tmp_path}/tls.key", "0604", "read",
         f"chmod o-rwx {tmp_path}/tls.key"),
    ]  # fmt: skip
    events = [line["event"] for line in lines]
    assert events.index("listening") > events.index("file open to other users")
    assert "poll failed" in events
    assert CANARY not in str(lines)


@pytest.mark.usefixtures("_restore_logging")
@pytest.mark.parametrize("source", ["demo", "token", "token_file"])
def test_run_exits_1_when_the_address_is_taken(
    source: str, busy_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "token"
    token.write_text(CANARY)
    api = ["--api.url", "http://127.0.0.1:9/api/v1"]  # --demo brings its own API
    sources = {
        "demo": ["--demo"],
        "token": ["--api.token", CANARY, *api],
        "token_file": ["--api.token-file", str(token), *api],
    }
    loaded = load([*sources[source], "--web.listen-address", busy_address,
                   "--log.format", "json"])  # fmt: skip
    assert asyncio.run(run(loaded.settings, Files(loaded.accounts, WebConfig()))) == 1
    err = capsys.readouterr().err
    [line] = [line for line in _log_lines(err) if line["event"] == "cannot listen"]
    assert line["address"] == busy_address
    assert line["level"] == "error"
    assert CANARY not in err


@pytest.mark.usefixtures("_restore_logging")
def test_main_exits_1_when_the_address_is_taken(
    busy_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--api.token", CANARY, "--web.listen-address", busy_address, "--log.format", "json"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert [line["event"] for line in _log_lines(err)] == ["cannot listen"]
    assert CANARY not in err
