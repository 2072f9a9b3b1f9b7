"""The simulator stands on its own: it loads and serves without one module of the exporter.

It is the exporter's independent counterpart, so code shared between them would hide a
misreading of the API that both made. Each check runs in a fresh interpreter, where nothing
else has loaded the exporter yet, with the exporter importable from the working directory.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from simulator.cli import parse_listen_address

from .test_webconfig import make_pki

ROOT = Path(__file__).resolve().parent.parent

EXPORTER_MODULES = """
def exporter_modules():
    return sorted(name for name in sys.modules if name.partition(".")[0] == "exporter")
"""

IMPORT = (
    "import importlib, json, sys\n"
    + EXPORTER_MODULES
    + "importlib.import_module(sys.argv[1])\n"
    + "print(json.dumps(exporter_modules()))\n"
)

# Serves three servers over HTTP and, with a plain ssl.SSLContext, over HTTPS, and fetches the
# listing from each; argv: the server's certificate, its key and the CA that signed it.
SERVE = (
    "import asyncio, json, ssl, sys\n"
    "import httpx\n"
    "from simulator import SimulatorOptions, start_simulator\n"
    + EXPORTER_MODULES
    + """
async def listing(verify, tls=None):
    options = SimulatorOptions(servers=3, token="t0ken")
    async with await start_simulator(options, ssl_context=tls) as simulator:
        async with httpx.AsyncClient(verify=verify, trust_env=False) as client:
            reply = await client.get(simulator.url + "/servers",
                                     headers={"Authorization": "Bearer t0ken"})
    return {"url": simulator.url, "status": reply.status_code, "listing": reply.json()}

async def main(cert, key, ca):
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    return {
        "http": await listing(True),
        "https": await listing(ssl.create_default_context(cafile=ca), tls),
    }

answers = asyncio.run(main(*sys.argv[1:]))
print(json.dumps({**answers, "exporter_modules": exporter_modules()}))
"""
)


def _python(script: str, *argv: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-c", script, *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_exporter_is_importable_where_the_checks_run() -> None:
    # Without this, an empty list below could mean that there was no exporter to load.
    assert _python(IMPORT, "exporter.web.server") == [
        "exporter",
        "exporter.web",
        "exporter.web.server",
    ]


@pytest.mark.parametrize(
    "module", ["simulator", "simulator.cli", "simulator.runner", "simulator.app"]
)
def test_importing_the_simulator_loads_no_exporter_module(module: str) -> None:
    assert _python(IMPORT, module) == []


def test_the_simulator_serves_a_listing_over_http_and_https_without_the_exporter(
    tmp_path: Path,
) -> None:
    pki = make_pki(tmp_path)
    answers = _python(SERVE, str(pki.server_cert), str(pki.server_key), str(pki.ca))
    assert answers["exporter_modules"] == []
    for scheme in ("http", "https"):
        answer = answers[scheme]
        assert answer["url"].startswith(f"{scheme}://127.0.0.1:"), answer
        assert answer["status"] == 200, answer
        assert len(answer["listing"]) == 3, answer
        assert {"id", "hostname"} <= answer["listing"][0].keys(), answer


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:8980", ("127.0.0.1", 8980)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:8980", ("::1", 8980)),
        (":8980", ("0.0.0.0", 8980)),
    ],
)
def test_the_listen_address_is_host_and_port(address: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(address) == expected


@pytest.mark.parametrize(
    "address", ["nowhere", "[]:8980", "::1:8980", "[::1]", "[::1]8980", "host:", "host:65536",
                "host:80a", "host:٨٠"],
)  # fmt: skip
def test_a_listen_address_without_host_and_port_is_one_line_of_error(address: str) -> None:
    with pytest.raises(ValueError, match=r"^listen address ") as caught:
        parse_listen_address(address)
    assert "\n" not in str(caught.value)
