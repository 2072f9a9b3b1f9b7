"""Certificates in process: renewed files served to new connections, over real TLS handshakes.

Most handshakes run between two memory BIOs, the server's end made by the listening context
as Hypercorn would make it; one test serves over a loopback socket with the watch running.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import structlog
from structlog.testing import capture_logs

from exporter.web.certificates import Certificates, RestartNeeded, log_reloads
from exporter.web.config import WebConfig, load_web_config
from exporter.web.server import PLAIN_HTTP_ANSWER, AsgiServer, bind_socket

from .test_webconfig import Pki, make_pki
from .test_webserver import App

Report = tuple[bool, str | None]


@pytest.fixture(scope="module")
def pkis(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pki, Pki]:
    return make_pki(tmp_path_factory.mktemp("pki-a")), make_pki(tmp_path_factory.mktemp("pki-b"))


def install(source: Path, target: Path) -> None:
    """Replace ``target`` as cert-manager and most tools do: write a new file, rename it over."""
    fresh = target.with_name(f".{target.name}.new")
    shutil.copyfile(source, fresh)
    os.replace(fresh, target)


def tls_config(directory: Path, pki: Pki, extra: str = "") -> Path:
    """A web configuration in ``directory`` naming ``tls.crt`` and ``tls.key`` there, copies of
    ``pki``'s server pair."""
    install(pki.server_cert, directory / "tls.crt")
    install(pki.server_key, directory / "tls.key")
    path = directory / "web.yml"
    path.write_text(f"tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n{extra}")
    return path


def with_client_ca(directory: Path, pki: Pki) -> Path:
    install(pki.ca, directory / "clients.pem")
    verified = "  client_ca_file: clients.pem\n  client_auth_type: RequireAndVerifyClientCert\n"
    return tls_config(directory, pki, verified)


def fingerprint(pem: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.read_text())).hexdigest()


def trusting(*pkis: Pki, cert_of: Pki | None = None) -> ssl.SSLContext:
    """A client context that trusts the server certificates of ``pkis``, and presents the
    client certificate of ``cert_of``."""
    context = ssl.create_default_context()
    for pki in pkis:
        context.load_verify_locations(pki.ca)
    if cert_of is not None:
        context.load_cert_chain(cert_of.client_cert, cert_of.client_key)
    return context


def handshake(
    server: ssl.SSLContext,
    client: ssl.SSLContext,
    session: ssl.SSLSession | None = None,
    name: str = "127.0.0.1",
) -> ssl.SSLObject:
    """A TLS handshake between memory BIOs, and then a byte each way, so that a TLS 1.3 server
    has checked the client's certificate too; the client's end. Raises the server's error.

    The client asks for ``name``; for an address, such as the default, it sends no server name,
    as a scrape of an address does not.
    """
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    near = client.wrap_bio(to_client, to_server, server_hostname=name, session=session)
    far = server.wrap_bio(server_in, server_out, server_side=True)
    for _ in range(10):
        try:
            near.do_handshake()
            break
        except ssl.SSLWantReadError:
            pass
        server_in.write(to_server.read())
        with contextlib.suppress(ssl.SSLWantReadError):
            far.do_handshake()
        to_client.write(server_out.read())
    near.write(b"?")
    server_in.write(to_server.read())
    assert far.read(1) == b"?"
    far.write(b"!")
    to_client.write(server_out.read())
    assert near.read(1) == b"!"
    return near


def served(certificates: Certificates, client: ssl.SSLContext, name: str = "127.0.0.1") -> str:
    """The fingerprint of the certificate a new connection is served."""
    assert certificates.context is not None
    peer = handshake(certificates.context, client, name=name).getpeercert(binary_form=True)
    assert peer is not None
    return hashlib.sha256(peer).hexdigest()


@asynccontextmanager
async def watching(
    web: WebConfig, interval: float = 3600.0
) -> AsyncIterator[tuple[Certificates, list[Report]]]:
    """Certificates with their watch started, and the reports they make."""
    reports: list[Report] = []
    certificates = Certificates(web, on_reload=lambda ok, problem: reports.append((ok, problem)),
                                interval=interval)  # fmt: skip
    certificates.start()
    try:
        yield certificates, reports
    finally:
        await certificates.stop()


def test_a_renewed_pair_is_served_to_new_connections(tmp_path: Path, pkis: tuple[Pki, Pki]) -> None:
    a, b = pkis
    client = trusting(a, b)

    async def main() -> None:
        async with watching(load_web_config(tls_config(tmp_path, a))) as (certificates, reports):
            assert served(certificates, client) == fingerprint(a.server_cert)
            await certificates.check()
            os.utime(tmp_path / "tls.crt")  # touched, not changed
            await certificates.check()
            assert reports == []
            install(b.server_cert, tmp_path / "tls.crt")
            install(b.server_key, tmp_path / "tls.key")
            await certificates.check()
            assert reports == [(True, None)]
            assert served(certificates, client) == fingerprint(b.server_cert)
            # A client that sends a server name is served the same.
            naming = trusting(a, b)
            naming.check_hostname = False
            renewed = fingerprint(b.server_cert)
            assert served(certificates, naming, "exporter.example.net") == renewed
            await certificates.check()
            assert reports == [(True, None)]

    asyncio.run(main())


def test_a_broken_pair_keeps_the_old_one_until_the_key_lands(
    tmp_path: Path, pkis: tuple[Pki, Pki]
) -> None:
    a, b = pkis
    client = trusting(a, b)

    async def main() -> None:
        async with watching(load_web_config(tls_config(tmp_path, a))) as (certificates, reports):
            # A renewal writes the certificate first, then the key.
            install(b.server_cert, tmp_path / "tls.crt")
            await certificates.check()
            [(ok, problem)] = reports
            assert not ok
            assert problem is not None
            assert "\n" not in problem
            assert f"{tmp_path / 'tls.crt'} and key_file {tmp_path / 'tls.key'}" in problem
            assert "not a matching PEM certificate and private key" in problem
            assert served(certificates, client) == fingerprint(a.server_cert)
            await certificates.check()  # the same broken pair is not tried again
            assert len(reports) == 1
            install(b.server_key, tmp_path / "tls.key")
            await certificates.check()
            assert reports[1:] == [(True, None)]
            assert served(certificates, client) == fingerprint(b.server_cert)

    asyncio.run(main())


def test_garbage_or_a_missing_file_is_named(tmp_path: Path, pkis: tuple[Pki, Pki]) -> None:
    a, _ = pkis
    client = trusting(a)

    async def main() -> None:
        async with watching(load_web_config(tls_config(tmp_path, a))) as (certificates, reports):
            (tmp_path / "tls.crt").write_text("-----BEGIN CERTIFICATE-----\nno\n")
            await certificates.check()
            (tmp_path / "tls.crt").unlink()
            await certificates.check()
            assert [ok for ok, _ in reports] == [False, False]
            garbage, missing = (problem or "" for _, problem in reports)
            assert f"cert_file {tmp_path / 'tls.crt'} and key_file" in garbage
            assert missing.startswith(f"tls_server_config.cert_file: cannot read "
                                      f"{tmp_path / 'tls.crt'}: No such file")  # fmt: skip
            assert served(certificates, client) == fingerprint(a.server_cert)

    asyncio.run(main())


def test_nothing_is_read_during_a_handshake(tmp_path: Path, pkis: tuple[Pki, Pki]) -> None:
    a, _ = pkis
    client = trusting(a)
    (tmp_path / "tls").mkdir()
    web = load_web_config(tls_config(tmp_path / "tls", a))
    certificates = Certificates(web, on_reload=lambda ok, problem: None)
    shutil.rmtree(tmp_path / "tls")
    for _ in range(3):
        assert served(certificates, client) == fingerprint(a.server_cert)


def test_a_new_client_ca_is_enforced_on_new_connections(
    tmp_path: Path, pkis: tuple[Pki, Pki]
) -> None:
    a, b = pkis

    web = load_web_config(with_client_ca(tmp_path, a))

    async def main() -> None:
        async with watching(web) as (certificates, reports):
            listening = certificates.context
            assert listening is not None
            handshake(listening, trusting(a, cert_of=a))
            with pytest.raises(ssl.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
                handshake(listening, trusting(a, cert_of=b))
            with pytest.raises(ssl.SSLError, match="PEER_DID_NOT_RETURN_A_CERTIFICATE"):
                handshake(listening, trusting(a))
            # A client that could resume its session would skip the certificate check.
            earlier = []
            for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
                context = trusting(a, cert_of=a)
                context.maximum_version = version
                earlier.append((context, handshake(listening, context).session))
            assert listening.session_stats()["number"] == 0  # nothing kept to resume from
            install(b.ca, tmp_path / "clients.pem")
            await certificates.check()
            assert reports == [(True, None)]
            handshake(listening, trusting(a, cert_of=b))
            with pytest.raises(ssl.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
                handshake(listening, trusting(a, cert_of=a))
            for context, session in earlier:
                with pytest.raises(ssl.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
                    handshake(listening, context, session=session)

    asyncio.run(main())


def test_apply_serves_other_files_and_settings(tmp_path: Path, pkis: tuple[Pki, Pki]) -> None:
    a, b = pkis
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = load_web_config(tls_config(tmp_path / "a", a))
    second = load_web_config(with_client_ca(tmp_path / "b", b))

    async def main() -> None:
        async with watching(first) as (certificates, reports):
            listening = certificates.context
            assert listening is not None
            assert served(certificates, trusting(a, b)) == fingerprint(a.server_cert)
            certificates.apply(second)
            assert certificates.context is listening
            assert served(certificates, trusting(a, b, cert_of=b)) == fingerprint(b.server_cert)
            # The verify mode is the listening context's: apply() set it.
            with pytest.raises(ssl.SSLError, match="PEER_DID_NOT_RETURN_A_CERTIFICATE"):
                handshake(listening, trusting(a, b))
            # The files watched now are the new configuration's.
            install(b.server_cert, tmp_path / "a" / "tls.crt")
            await certificates.check()
            assert reports == []
            install(a.server_cert, tmp_path / "b" / "tls.crt")
            install(a.server_key, tmp_path / "b" / "tls.key")
            await certificates.check()
            assert reports == [(True, None)]
            assert served(certificates, trusting(a, cert_of=b)) == fingerprint(a.server_cert)
            tls13 = load_web_config(tls_config(tmp_path / "a", a, "  min_version: TLS13\n"))
            certificates.apply(tls13)
            older = trusting(a)
            older.maximum_version = ssl.TLSVersion.TLSv1_2
            with pytest.raises(ssl.SSLError, match="UNSUPPORTED_PROTOCOL"):
                handshake(listening, older)

    asyncio.run(main())


def test_apply_refuses_to_turn_tls_on_or_off(tmp_path: Path, pkis: tuple[Pki, Pki]) -> None:
    a, _ = pkis
    path = tls_config(tmp_path, a)
    tls = load_web_config(path)
    plain = Certificates(WebConfig(), on_reload=lambda ok, problem: None)
    assert plain.context is None
    plain.apply(WebConfig())
    with pytest.raises(RestartNeeded) as turning_on:
        plain.apply(tls)
    assert plain.context is None
    secured = Certificates(tls, on_reload=lambda ok, problem: None)
    with pytest.raises(RestartNeeded) as turning_off:
        secured.apply(WebConfig())
    assert served(secured, trusting(a)) == fingerprint(a.server_cert)
    on, off = turning_on.value, turning_off.value
    assert (on.tls, on.path, on.key) == (True, path, "tls_server_config")
    assert (off.tls, off.path, off.key) == (False, path, "tls_server_config")
    assert str(on) == ("tls_server_config: turning TLS on needs a restart "
                       "(the server listens with plain HTTP)")  # fmt: skip
    assert str(off) == ("tls_server_config: turning TLS off needs a restart "
                        "(the server listens with TLS)")  # fmt: skip


def test_plain_http_is_still_answered_and_the_watch_runs_by_itself(
    tmp_path: Path, pkis: tuple[Pki, Pki]
) -> None:
    a, b = pkis
    web = load_web_config(tls_config(tmp_path, a))

    async def certificate(port: int) -> str:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=trusting(a, b))
        try:
            peer = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            return hashlib.sha256(peer).hexdigest()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    async def main() -> None:
        async with watching(web, interval=0.05) as (certificates, reports):
            server = AsgiServer(App(), bind_socket("127.0.0.1", 0),
                                ssl_context=certificates.context)  # fmt: skip
            await server.start()
            try:
                assert await certificate(server.port) == fingerprint(a.server_cert)
                plain = await _plain_get(server.port)
                assert plain == PLAIN_HTTP_ANSWER
                install(b.server_cert, tmp_path / "tls.crt")
                install(b.server_key, tmp_path / "tls.key")
                for _ in range(200):
                    if await certificate(server.port) == fingerprint(b.server_cert):
                        break
                    await asyncio.sleep(0.05)
                assert await certificate(server.port) == fingerprint(b.server_cert)
                async with httpx.AsyncClient(verify=trusting(b), timeout=5) as client:
                    response = await client.get(f"https://127.0.0.1:{server.port}/")
                assert response.status_code == 200
                # The watch may have seen the new certificate before its key: a failed reload.
                assert reports[-1] == (True, None)
            finally:
                await server.stop()

    asyncio.run(main())


async def _plain_get(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        return await asyncio.wait_for(reader.readexactly(len(PLAIN_HTTP_ANSWER)), 5)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def test_plain_http_has_nothing_to_watch() -> None:
    reports: list[Report] = []

    async def main() -> None:
        certificates = Certificates(WebConfig(), on_reload=lambda ok, p: reports.append((ok, p)))
        await certificates.stop()  # before start: nothing to stop
        certificates.start()
        await certificates.check()
        await certificates.stop()
        assert certificates.context is None

    asyncio.run(main())
    assert reports == []


def test_reloads_are_logged_in_one_line_each() -> None:
    with capture_logs() as logs:
        report = log_reloads(structlog.get_logger("test"))
        report(True, None)
        report(False, "tls_server_config: cert_file x and key_file y")
    assert logs == [
        {"event": "certificates reloaded", "log_level": "info"},
        {"event": "certificates not reloaded", "log_level": "error",
         "problem": "tls_server_config: cert_file x and key_file y"},
    ]  # fmt: skip
