"""How the client reaches the API: which certificates it trusts, and which proxy, if any.

Both are decided once at start-up by the composition root and handed to the client, so the
client reads no environment of its own. httpx's own ``trust_env`` stays off: it would also
take ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` from the environment, and a proxy for plain
``http://`` URLs.

The rules:

* Trusted certificates: httpx's default bundle (certifi, Mozilla's list), plus every CA
  certificate in ``--api.ca-file`` when given. ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` are not read.
* Proxy: ``https_proxy``/``HTTPS_PROXY``, else ``all_proxy``/``ALL_PROXY`` (the lower-case
  name first, as curl and Python's urllib do), unless ``no_proxy``/``NO_PROXY`` names the API's
  host. The proxy gets a ``CONNECT`` and the API's TLS runs inside that tunnel, so the proxy
  never sees the token. An ``http://`` API URL never goes through a proxy (``HTTP_PROXY`` is
  not used): the proxy would read the token in clear.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

PROXY_VARIABLES = ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
NO_PROXY_VARIABLES = ("no_proxy", "NO_PROXY")


class CaFileError(ValueError):
    """``--api.ca-file`` cannot be used; ``problem`` says why, in one line."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(problem)
        self.path = path
        self.problem = problem


class ProxySettingError(ValueError):
    """A proxy variable that cannot be honoured; ``variable`` names it, ``problem`` says why."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(variable, problem)
        self.variable = variable
        self.problem = problem

    def __str__(self) -> str:
        return f"invalid proxy variable {self.variable}: {self.problem}"


@dataclass(frozen=True)
class Proxy:
    """A forward proxy for the API, and the variable it was taken from.

    ``url`` may carry the proxy's own credentials; ``origin`` is what may be logged.
    """

    url: str = field(repr=False)
    variable: str

    @property
    def origin(self) -> str:
        parts = urlsplit(self.url)
        host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
        return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


@dataclass(frozen=True)
class ApiRoute:
    """What the client needs to reach the API: whom to trust, and the proxy (None: direct)."""

    tls: ssl.SSLContext
    proxy: Proxy | None = None


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """The certificates the client trusts: httpx's default bundle, plus ``ca_file``'s CAs."""
    context = httpx.create_ssl_context(trust_env=False)
    if ca_file is None:
        return context
    try:
        pem = ca_file.read_bytes()
    except OSError as error:
        raise CaFileError(ca_file, f"cannot read {ca_file}: {error.strerror}") from None
    try:
        # Text, so that OpenSSL reads PEM blocks (bytes would be taken for DER).
        context.load_verify_locations(cadata=pem.decode("latin-1"))
    except (ssl.SSLError, ValueError):
        raise CaFileError(ca_file, f"no PEM certificate in {ca_file}") from None
    return context


def environment_proxy(api_url: str, environ: Mapping[str, str]) -> Proxy | None:
    """The proxy the standard variables in ``environ`` name for ``api_url``, or None.

    None for an ``http://`` API URL whatever the variables say: the token would cross the
    proxy in clear. Raises ``ProxySettingError`` for a proxy URL the client cannot use.
    """
    parts = urlsplit(api_url)
    if parts.scheme != "https" or not parts.hostname:
        return None
    variable = next((name for name in PROXY_VARIABLES if environ.get(name, "").strip()), None)
    if variable is None or _bypassed(parts.hostname, environ):
        return None
    url = environ[variable].strip()
    if "://" not in url:
        url = f"http://{url}"  # curl's reading of a bare host:port
    proxy = urlsplit(url)
    if proxy.scheme not in ("http", "https"):
        raise ProxySettingError(variable, f"{proxy.scheme}:// proxies are not supported; "
                                "give an http:// or https:// proxy")  # fmt: skip
    try:
        proxy.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ProxySettingError(variable, "the proxy's port is not a number") from None
    if not proxy.hostname:
        raise ProxySettingError(variable, "the proxy URL has no host")
    return Proxy(url, variable)


def _bypassed(host: str, environ: Mapping[str, str]) -> bool:
    """Whether ``no_proxy``/``NO_PROXY`` names ``host``.

    Entries are separated by commas: ``*`` (every host), a host name or domain (``example.com``
    and ``.example.com`` both match ``example.com`` and its subdomains), an IP address, or an
    IP network (``10.0.0.0/8``). A port after an entry is ignored. Names compare
    case-insensitively.
    """
    variable = next((name for name in NO_PROXY_VARIABLES if environ.get(name, "").strip()), None)
    if variable is None:
        return False
    host = host.lower().rstrip(".")
    address = _address(host)
    for entry in environ[variable].split(","):
        entry = entry.strip().lower()
        if entry == "*":
            return True
        entry = _without_port(entry).strip("[]").lstrip("*").lstrip(".").rstrip(".")
        if not entry:
            continue
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
        elif host == entry or host.endswith(f".{entry}"):
            return True
    return False


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _without_port(entry: str) -> str:
    if entry.startswith("["):  # [v6]:port
        return entry.partition("]")[0] + "]"
    host, sep, port = entry.rpartition(":")
    if sep and port.isdigit() and host.count(":") == 0:
        return host
    return entry
