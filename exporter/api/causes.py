"""Why a request got no answer, in words an operator can act on.

httpx reports every failure to connect as ``ConnectError``; the cause is further down the
exception chain that httpx, httpcore and anyio build: an ``OSError`` with an errno, a
``socket.gaierror``, an ``ssl.SSLCertVerificationError`` with its ``verify_message``, an
``ssl.SSLError`` with its ``reason``. The words are built from those fields only, never from
a URL or a header, so neither the token nor a query string can end up in them.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
from collections.abc import Iterator

import httpx

_ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ECONNABORTED: "connection aborted",
    errno.EPIPE: "connection closed while sending",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "connection timed out",
}

# OpenSSL's reason when the first bytes back are not a TLS record: most often an HTTP answer.
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST"})


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and everything it was raised from or during, each once, outermost first."""
    seen: set[int] = set()
    queue = [error]
    while queue:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            queue.extend(current.exceptions)
        queue.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def _tls(error: ssl.SSLError) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {error.verify_message or error.reason}"
    reason = error.reason or type(error).__name__
    if reason in _NOT_TLS:
        return f"TLS handshake failed: {reason} (is it a plain-HTTP port?)"
    return f"TLS handshake failed: {reason}"


def connection_cause(error: BaseException) -> str:
    """What went wrong below HTTP, from the most telling exception in ``error``'s chain."""
    chain = list(_chain(error))
    for found in chain:
        if isinstance(found, ssl.SSLError):
            return _tls(found)
    for found in chain:
        if isinstance(found, socket.gaierror):
            return f"host name not resolved ({found.strerror or 'no address'})"
    for found in chain:
        if isinstance(found, OSError) and found.errno:
            return _ERRNO_WORDS.get(found.errno) or os.strerror(found.errno)
    for found in chain:
        if isinstance(found, httpx.ProxyError):
            # httpcore's text is the proxy's status line for the CONNECT, e.g. "403 Forbidden".
            return f"the proxy refused the tunnel: {found}"
        if isinstance(found, httpx.RemoteProtocolError):
            return "connection closed without a valid HTTP answer"
        if isinstance(found, httpx.LocalProtocolError):
            # Its text quotes the offending header, which may be the Authorization header.
            return "request not sent: a header value is not valid HTTP"
    return type(error).__name__
