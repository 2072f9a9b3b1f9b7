"""The exporter as a process picks up renewed certificate files without a restart."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest

from .processes import Process, wait_until
from .test_certificates import fingerprint, install, trusting
from .test_server import samples, value
from .test_tls_auth import https, tls_exporter
from .test_webconfig import Pki, make_pki

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pkis(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pki, Pki]:
    return make_pki(tmp_path_factory.mktemp("pki-a")), make_pki(tmp_path_factory.mktemp("pki-b"))


def served(proc: Process, trust: ssl.SSLContext) -> str:
    """The fingerprint of the certificate a new connection to ``proc`` is served."""
    host, port = proc.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw, \
            trust.wrap_socket(raw, server_hostname=host) as tls:  # fmt: skip
        peer = tls.getpeercert(binary_form=True)
    assert peer is not None
    return hashlib.sha256(peer).hexdigest()


def log_lines(proc: Process, *events: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in proc.output().splitlines() if line.startswith("{")]
    return [line for line in lines if line["event"] in events]


RELOADS = ("certificates reloaded", "certificates not reloaded")


def reload_successful(proc: Process, trust: ssl.SSLContext) -> float:
    """``evotic_config_last_reload_successful`` as the exporter serves it over TLS."""
    text = httpx.get(f"{https(proc)}/metrics", verify=trust, timeout=10).text
    return value(samples(text), "evotic_config_last_reload_successful")


def web_config(directory: Path) -> str:
    return (f"tls_server_config:\n  cert_file: {directory / 'tls.crt'}\n"
            f"  key_file: {directory / 'tls.key'}\n")  # fmt: skip


def test_renewed_files_are_served_and_a_broken_pair_is_not(
    tmp_path: Path, pkis: tuple[Pki, Pki]
) -> None:
    a, b = pkis
    trust = trusting(a, b)
    tls = tmp_path / "tls"
    tls.mkdir()
    install(a.server_cert, tls / "tls.crt")
    install(a.server_key, tls / "tls.key")
    with tls_exporter(tmp_path, web_config(tls), trust) as proc:
        assert served(proc, trust) == fingerprint(a.server_cert)
        install(b.server_cert, tls / "tls.crt")
        install(b.server_key, tls / "tls.key")
        wait_until(lambda: served(proc, trust) == fingerprint(b.server_cert),
                   what="the renewed certificate to be served")  # fmt: skip
        # The watch may have looked between the two renames, and said so first.
        assert log_lines(proc, *RELOADS)[-1]["event"] == "certificates reloaded"
        assert reload_successful(proc, trust) == 1
        reloads = len(log_lines(proc, *RELOADS))
        # A certificate without its key, as a renewal that stopped half-way leaves it.
        install(a.server_cert, tls / "tls.crt")
        wait_until(lambda: len(log_lines(proc, *RELOADS)) > reloads, what="a reload line")
        assert served(proc, trust) == fingerprint(b.server_cert)
        failed = log_lines(proc, *RELOADS)[-1]
        assert (failed["event"], failed["level"]) == ("certificates not reloaded", "error")
        assert f"cert_file {tls / 'tls.crt'} and key_file {tls / 'tls.key'}" in failed["problem"]
        assert "not a matching PEM certificate and private key" in failed["problem"]
        assert reload_successful(proc, trust) == 0  # a failed reload, until a good one
        assert proc.popen.poll() is None
    assert "Traceback" not in proc.output()


def test_a_kubernetes_secret_volume_swap_is_followed(tmp_path: Path, pkis: tuple[Pki, Pki]) -> None:
    """A secret volume: tls.crt -> ..data/tls.crt, ..data -> a timestamped folder; an update
    writes a new folder and renames a new ..data link over the old one."""
    a, b = pkis
    trust = trusting(a, b)
    volume = tmp_path / "secret"
    volume.mkdir()

    def publish(pki: Pki, version: str) -> None:
        (volume / version).mkdir()
        install(pki.server_cert, volume / version / "tls.crt")
        install(pki.server_key, volume / version / "tls.key")
        os.symlink(version, volume / "..data_tmp")
        os.replace(volume / "..data_tmp", volume / "..data")

    publish(a, "..2024_06_01_12_00_00.1")
    for name in ("tls.crt", "tls.key"):
        os.symlink(f"..data/{name}", volume / name)
    with tls_exporter(tmp_path, web_config(volume), trust) as proc:
        assert served(proc, trust) == fingerprint(a.server_cert)
        publish(b, "..2024_08_30_12_00_00.2")
        wait_until(lambda: served(proc, trust) == fingerprint(b.server_cert),
                   what="the certificate of the new secret to be served")  # fmt: skip
        assert log_lines(proc, *RELOADS)[-1]["event"] == "certificates reloaded"
