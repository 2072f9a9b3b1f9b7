"""TLS certificates that follow their files: a renewed certificate is served without a restart.

Hypercorn takes the server's ``SSLContext`` once, at start-up, so the context it listens with
stays the same object for the life of the server and holds no certificate of its own. Its
``sni_callback``, which OpenSSL calls on every ClientHello (with ``None`` for the name when the
client sends none, as a scrape of an IP address does), moves the new connection onto the
context last built from the files. The files are looked at every few seconds, in a worker
thread, and compared by the digests of their contents; when they change, a new context is built
from them. One that cannot be built (a key that does not match its certificate, a file half
written or gone) leaves the last good one serving, and is tried again when the files change
again. Nothing is read during a handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from exporter.web.config import Fingerprint, LoadedTls, TlsFiles, WebConfig, WebConfigError
from exporter.web.server import HttpsContext

CHECK_INTERVAL = 2.0

# Called after each attempt to load changed files: (True, None), or (False, why in one line).
ReloadCallback = Callable[[bool, str | None], None]


class RestartNeeded(WebConfigError):
    """A web configuration that turns TLS on or off, which a running server cannot do.

    ``tls`` is whether the new configuration asks for TLS. ``str()`` is one line.
    """

    def __init__(self, path: Path | None, tls: bool) -> None:
        now, then = ("on", "plain HTTP") if tls else ("off", "TLS")
        problem = f"turning TLS {now} needs a restart (the server listens with {then})"
        super().__init__(path, "tls_server_config", problem)
        self.tls = tls


@dataclass(frozen=True)
class _Attempt:
    """What a look at changed files found, to be settled on the event loop."""

    fingerprint: Fingerprint
    loaded: LoadedTls | None
    problem: str | None


class Certificates:
    """The context the server listens with, serving the certificate files as they are now.

    Setting ``SSLObject.context`` is OpenSSL's ``SSL_set_SSL_CTX``. It moves the connection to
    the new context's certificate, key, cipher list and ALPN, and client certificates are
    verified against the new context's trust store (the client CA); but the verify mode, the
    protocol versions and the options were copied from the listening context when the
    connection was made, and stay. The listening context therefore carries those settings too
    (``TlsFiles.configure``), and ``apply()`` sets them again for a new configuration.

    Sessions are never resumed: a resumed session skips the client certificate check, so a
    ticket from before a change of client CA would still let its holder in. Tickets are the
    only way this server resumes a session (its session cache stays empty), and it issues none.

    ``start()`` begins the watch and ``stop()`` ends it; ``check()`` is one look. It and
    ``apply()`` change what is served only on the event loop, where handshakes run, so a
    connection never sees half a change.
    """

    def __init__(
        self, web: WebConfig, *, on_reload: ReloadCallback, interval: float = CHECK_INTERVAL
    ) -> None:
        self._on_reload = on_reload
        self._interval = interval
        self._loaded = web.tls_server
        self._tried = self._loaded.fingerprint if self._loaded is not None else ()
        self._listening: HttpsContext | None = None
        if self._loaded is not None:
            self._listening = HttpsContext(ssl.PROTOCOL_TLS_SERVER)
            self._loaded.files.configure(self._listening)
            self._listening.num_tickets = 0  # TLS 1.3
            self._listening.options |= ssl.OP_NO_TICKET  # TLS 1.2
            self._listening.sni_callback = self._serve
        self._task: asyncio.Task[None] | None = None

    @property
    def context(self) -> HttpsContext | None:
        """The context to listen with; ``None`` for plain HTTP."""
        return self._listening

    def _serve(
        self, connection: ssl.SSLObject, server_name: str | None, listening: ssl.SSLContext
    ) -> None:
        if self._loaded is not None:
            connection.context = self._loaded.context

    def apply(self, web: WebConfig) -> None:
        """Serve new connections with the TLS settings of a newly loaded web configuration.

        Its files may be others, and its settings too. ``RestartNeeded`` if it turns TLS on or
        off; nothing changes then.
        """
        loaded = web.tls_server
        if (loaded is None) != (self._loaded is None):
            either = loaded or self._loaded
            raise RestartNeeded(either.files.config if either else None, tls=loaded is not None)
        if loaded is None or self._listening is None:
            return
        loaded.files.configure(self._listening)
        self._loaded = loaded
        self._tried = loaded.fingerprint

    async def check(self) -> None:
        """Look at the files once; if they changed since the last look, load them and report."""
        loaded = self._loaded
        if loaded is None:
            return
        attempt = await asyncio.to_thread(_look, loaded.files, self._tried)
        # Unchanged, or apply() gave other files while this look was under way.
        if attempt is None or self._loaded is not loaded:
            return
        self._tried = attempt.fingerprint
        if attempt.loaded is not None:
            self._loaded = attempt.loaded
        self._on_reload(attempt.loaded is not None, attempt.problem)

    def start(self) -> None:
        """Look at the files every ``interval`` seconds until ``stop()``; nothing for plain HTTP."""
        if self._loaded is not None and self._task is None:
            self._task = asyncio.create_task(self._watch(), name="certificates")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.check()


def _look(files: TlsFiles, tried: Fingerprint) -> _Attempt | None:
    """Load ``files`` if what they hold is not what was last tried; ``None`` if it is."""
    fingerprint = files.fingerprint()
    if fingerprint == tried:
        return None
    try:
        loaded = files.load()
    except WebConfigError as error:
        return _Attempt(fingerprint, None, str(error))
    return _Attempt(loaded.fingerprint, loaded, None)


def log_reloads(logger: structlog.typing.FilteringBoundLogger) -> ReloadCallback:
    """A ``ReloadCallback`` that says what happened in one log line."""

    def report(ok: bool, problem: str | None) -> None:
        if ok:
            logger.info("certificates reloaded")
        else:
            logger.error("certificates not reloaded", problem=problem)

    return report
