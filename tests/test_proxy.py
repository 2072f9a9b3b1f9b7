"""The exporter as a process behind a forward proxy, against the simulator served over HTTPS.

The simulator's certificate is signed by a test CA that only ``EVOTIC_API_CA_FILE`` makes
trusted; the proxy records every byte it is sent, the tunnels' included, so the tests can
assert that it saw a CONNECT and never the token.
"""

from __future__ import annotations

import contextlib
import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from exporter.web.server import HttpsContext
from simulator import SimulatorOptions, start_simulator
from simulator.runner import RunningSimulator

from .forward_proxy import BackgroundLoop, ForwardProxy
from .processes import Process, exporter, wait_until
from .test_webconfig import Pki, make_pki

pytestmark = pytest.mark.e2e

TOKEN = "pr0xy-canary-token-4c9a"
PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                   "ALL_PROXY", "no_proxy", "NO_PROXY")  # fmt: skip


@dataclass
class Network:
    """A proxy, the simulator over HTTPS and over plain HTTP, all in one background loop."""

    pki: Pki
    proxy: ForwardProxy
    https_api: RunningSimulator
    http_api: RunningSimulator
    token_file: Path

    def proxy_env(self, **variables: str) -> dict[str, str]:
        """Every proxy variable set, empty unless given: the test runner's own must not count."""
        env = dict.fromkeys(PROXY_VARIABLES, "")
        env.update(variables)
        return env


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    directory = tmp_path_factory.mktemp("proxy")
    pki = make_pki(directory)
    tls = HttpsContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(pki.server_cert, pki.server_key)
    token_file = directory / "token"
    token_file.write_text(TOKEN)
    options = SimulatorOptions(servers=3, token=TOKEN)
    loop = BackgroundLoop()
    try:
        proxy = loop.run(ForwardProxy().start())
        https_api = loop.run(start_simulator(options, ssl_context=tls))
        http_api = loop.run(start_simulator(options))
        try:
            yield Network(pki, proxy, https_api, http_api, token_file)
        finally:
            loop.run(https_api.stop())
            loop.run(http_api.stop())
            loop.run(proxy.stop())
    finally:
        loop.close()


def _exporter(
    tmp_path: Path, network: Network, api: RunningSimulator, env: dict[str, str]
) -> contextlib.AbstractContextManager[Process]:
    """The exporter polling ``api`` every 5 s, trusting the test CA through the variable."""
    ca = {"EVOTIC_API_CA_FILE": str(network.pki.ca)}
    return exporter(tmp_path, "--api.url", api.url, "--api.token-file", str(network.token_file),
                    "--poll.interval", "1", env={**ca, **env})  # fmt: skip


def _events(proc: Process) -> list[dict[str, object]]:
    return [json.loads(line) for line in proc.output().splitlines() if line.startswith("{")]


def test_the_api_is_polled_through_the_proxy_without_it_seeing_the_token(
    tmp_path: Path, network: Network
) -> None:
    before = len(network.proxy.request_lines)
    env = network.proxy_env(HTTPS_PROXY=network.proxy.url)
    with _exporter(tmp_path, network, network.https_api, env) as proc:  # ready: a poll succeeded
        output = proc.output()
    seen = network.proxy.request_lines[before:]
    assert seen, "the exporter did not use the proxy"
    assert set(seen) == {f"CONNECT 127.0.0.1:{network.https_api.port} HTTP/1.1"}
    assert TOKEN.encode() not in bytes(network.proxy.received)
    [line] = [e for e in _events(proc) if e["event"] == "reaching the API through a proxy"]
    assert line["proxy"] == network.proxy.url
    assert line["variable"] == "HTTPS_PROXY"
    assert TOKEN not in output


def test_no_proxy_sends_the_api_past_the_proxy(tmp_path: Path, network: Network) -> None:
    before = len(network.proxy.request_lines)
    env = network.proxy_env(HTTPS_PROXY=network.proxy.url, NO_PROXY="localhost,127.0.0.1")
    with _exporter(tmp_path, network, network.https_api, env) as proc:
        pass
    assert network.proxy.request_lines[before:] == []
    assert not [e for e in _events(proc) if e["event"] == "reaching the API through a proxy"]


def test_a_plain_http_api_is_never_sent_through_a_proxy(tmp_path: Path, network: Network) -> None:
    before = len(network.proxy.request_lines)
    env = network.proxy_env(HTTP_PROXY=network.proxy.url, HTTPS_PROXY=network.proxy.url,
                            ALL_PROXY=network.proxy.url)  # fmt: skip
    with _exporter(tmp_path, network, network.http_api, env):
        pass
    assert network.proxy.request_lines[before:] == [], "the token would cross the proxy in clear"


def test_without_the_ca_file_the_private_ca_is_not_trusted(
    tmp_path: Path, network: Network
) -> None:
    with exporter(tmp_path, "--api.url", network.https_api.url, "--api.token-file",
                  str(network.token_file), "--poll.interval", "1", env=network.proxy_env(),
                  wait_ready=False) as proc:  # fmt: skip
        wait_until(lambda: any(e["event"] == "poll failed" for e in _events(proc)),
                   what="a failed poll")  # fmt: skip
    [failed] = [e for e in _events(proc) if e["event"] == "poll failed"]
    assert failed["reason"] == "connection"
    assert failed["error"] == (
        "servers: TLS certificate not trusted: unable to get local issuer certificate"
    )
