"""The web configuration file (``--web.config.file``): TLS, basic auth and security headers.

The format is the Prometheus exporter-toolkit's, so one file can serve this exporter and the
Go exporters next to it. The file is read once, at start-up, and everything in it is checked
and built there: certificates are loaded into an ``ssl.SSLContext`` and every password must be
a bcrypt hash, so a mistake stops the exporter with one line instead of failing a scrape later.
A key of that format which this exporter cannot honour is refused by name, never ignored.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import re
import secrets
import ssl
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import bcrypt
import yaml

REALM = "evotic-exporter"
CHALLENGE = f'Basic realm="{REALM}"'.encode("ascii")

TLS_VERSIONS: Mapping[str, ssl.TLSVersion] = MappingProxyType({
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
})  # fmt: skip

# client_auth_type -> (verify mode, whether client_ca_file is required).
CLIENT_AUTH: Mapping[str, tuple[ssl.VerifyMode, bool]] = MappingProxyType({
    "NoClientCert": (ssl.CERT_NONE, False),
    "VerifyClientCertIfGiven": (ssl.CERT_OPTIONAL, True),
    "RequireAndVerifyClientCert": (ssl.CERT_REQUIRED, True),
})  # fmt: skip

# Go's types accept a certificate without verifying it; OpenSSL through Python's ssl module can
# only ask for a certificate it then verifies. Refusing beats quietly becoming stricter.
_UNVERIFIED_CLIENT_AUTH = frozenset({"RequestClientCert", "RequireAnyClientCert",
                                     "RequireClientCert"})  # fmt: skip

# The IANA names the toolkit takes (Go's tls.CipherSuites()) and OpenSSL's names for them.
# The TLS 1.3 suites are accepted and, as in Go, change nothing: they cannot be configured.
CIPHER_SUITES: Mapping[str, str | None] = MappingProxyType({
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
})  # fmt: skip

# The headers the toolkit lets a file add, and the values it allows where it restricts them.
# Kept to this list on purpose, as the toolkit does, so the ecosystem's files stay portable.
SECURITY_HEADERS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "Content-Security-Policy": (),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-Content-Type-Options": ("nosniff",),
    "X-XSS-Protection": (),
    "Strict-Transport-Security": (),
})  # fmt: skip

_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_DECOY_PASSWORD = b"evotic-exporter decoy password"

_TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users")
_TLS_KEYS = ("cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version",
             "max_version", "cipher_suites", "prefer_server_cipher_suites")  # fmt: skip
_HTTP_KEYS = ("http2", "headers")
_NOT_SUPPORTED = "is not supported by evotic-exporter"
_UNSUPPORTED: Mapping[str, str] = MappingProxyType({
    "rate_limit": _NOT_SUPPORTED,
    "tls_server_config.cert": "inline PEM is not supported; use cert_file",
    "tls_server_config.key": "inline PEM is not supported; use key_file",
    "tls_server_config.client_ca": "inline PEM is not supported; use client_ca_file",
    "tls_server_config.client_allowed_sans": _NOT_SUPPORTED,
    "tls_server_config.curve_preferences": _NOT_SUPPORTED,
})  # fmt: skip


class WebConfigError(ValueError):
    """The web configuration cannot be used; the message is one line and holds no secret."""


Checker = Callable[[bytes, bytes], bool]


class BasicAuth:
    """HTTP basic authentication against bcrypt hashes, without blocking the event loop.

    bcrypt spends tens to hundreds of milliseconds of CPU per check by design, so checks run in
    worker threads, at most ``max_concurrent_checks`` at once: a flood of wrong passwords waits
    in line instead of taking every core. A user's last accepted password is remembered as a
    keyed digest (one per configured user, so the memory is bounded by the file), and a
    scraper sending the same credentials every 15 s pays bcrypt once. A name that is not
    configured is still checked, against a decoy hash of the highest cost in use, so the
    answer takes as long as for a configured name and does not tell which names exist.
    """

    def __init__(
        self,
        users: Mapping[str, bytes],
        *,
        check: Checker = bcrypt.checkpw,
        decoy_hash: bytes | None = None,
        max_concurrent_checks: int = 2,
    ) -> None:
        if not users:
            raise ValueError("BasicAuth needs at least one user")
        self._users = dict(users)
        self._check = check
        self._decoy = decoy_hash if decoy_hash is not None else make_decoy_hash(users.values())
        self._slots = asyncio.Semaphore(max_concurrent_checks)
        # Keyed, so that the remembered digests are worthless without this process's memory.
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, bytes] = {}
        self._nothing = bytes(hashlib.sha256().digest_size)

    @property
    def users(self) -> frozenset[str]:
        return frozenset(self._users)

    async def authenticate(self, authorization: bytes | None) -> bool:
        """Whether an ``Authorization`` header value names a user and the right password.

        Never raises: a missing or malformed header is simply not authenticated.
        """
        credentials = parse_basic_authorization(authorization)
        if credentials is None:
            return False
        user, password = credentials
        digest = hmac.new(self._key, password, hashlib.sha256).digest()
        if hmac.compare_digest(self._verified.get(user, self._nothing), digest):
            return True
        hashed = self._users.get(user)
        against = self._decoy if hashed is None else hashed
        async with self._slots:
            matches = await asyncio.to_thread(self._check_quietly, password, against)
        if hashed is None or not matches:
            return False
        self._verified[user] = digest
        return True

    def _check_quietly(self, password: bytes, hashed: bytes) -> bool:
        try:
            return self._check(password, hashed)
        except ValueError:  # bcrypt refuses passwords over 72 bytes rather than truncating
            return False


def parse_basic_authorization(value: bytes | None) -> tuple[str, bytes] | None:
    """``(user, password)`` from ``Basic <base64 of user:password>``; ``None`` if malformed."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
        user, sep, password = decoded.partition(b":")
        name = user.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (name, password) if sep else None


def make_decoy_hash(hashes: Iterable[bytes]) -> bytes:
    """A bcrypt hash of a fixed password at the highest cost among ``hashes``.

    Checking an unknown user against it costs as much as checking the slowest real user.
    """
    cost = max((int(h[4:6]) for h in hashes), default=10)
    return bcrypt.hashpw(_DECOY_PASSWORD, bcrypt.gensalt(rounds=cost))


@dataclass(frozen=True)
class WebConfig:
    """What the web configuration file asks for, checked and ready to use.

    The default is what no file means: plain HTTP, no authentication, no extra headers.
    """

    ssl_context: ssl.SSLContext | None = None
    client_auth: str = "NoClientCert"
    auth: BasicAuth | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # Accepted for compatibility with the toolkit's files; the server speaks HTTP/1.1 only.
    http2: bool = True

    @property
    def tls(self) -> bool:
        return self.ssl_context is not None


def load_web_config(path: Path) -> WebConfig:
    """Read, check and build the web configuration in ``path``; ``WebConfigError`` if unusable.

    Relative file names inside it are taken relative to the file's own directory, as the
    toolkit does.
    """
    document = _read_yaml(path)
    top = _section(document, "", _TOP_KEYS)
    tls = _section(top.get("tls_server_config"), "tls_server_config", _TLS_KEYS)
    http = _section(top.get("http_server_config"), "http_server_config", _HTTP_KEYS)
    users = _users(top.get("basic_auth_users"))
    context, client_auth = _tls_context(tls, path.parent) if _tls_wanted(tls) else (None, None)
    return WebConfig(
        ssl_context=context,
        client_auth=client_auth or "NoClientCert",
        auth=BasicAuth(users) if users else None,
        headers=MappingProxyType(_headers(http.get("headers"))),
        http2=_boolean(http, "http2", "http_server_config", default=True),
    )


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice, where the last one would win."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Hashable] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if isinstance(key, Hashable):
            if key in seen:
                raise WebConfigError(
                    f"line {key_node.start_mark.line + 1}: key {key!r} is given twice"
                )
            seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                              _mapping_without_duplicates)  # fmt: skip


def _read_yaml(path: Path) -> object:
    try:
        text = path.read_bytes()
    except OSError as error:
        raise WebConfigError(f"cannot read {path}: {error.strerror}") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as error:
        # str(error) quotes the offending line, which may hold a password: position only.
        mark = error.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise WebConfigError(f"{path} is not valid YAML{where}: {error.problem}") from None
    except yaml.YAMLError:
        raise WebConfigError(f"{path} is not valid YAML (or not UTF-8 text)") from None


def _name(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


def _section(value: object, where: str, known: tuple[str, ...]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WebConfigError(f"{where or 'the file'}: must be a mapping of keys to values")
    for key in value:
        name = _name(where, key)
        if name in _UNSUPPORTED:
            raise WebConfigError(f"{name}: {_UNSUPPORTED[name]}")
        if key not in known:
            raise WebConfigError(f"{name}: unknown key (known: {', '.join(known)})")
    return value


def _string(section: Mapping[str, Any], key: str, where: str) -> str | None:
    value = section.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise WebConfigError(f"{_name(where, key)}: must be a string")
    return value


def _boolean(section: Mapping[str, Any], key: str, where: str, *, default: bool) -> bool:
    value = section.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise WebConfigError(f"{_name(where, key)}: must be true or false")
    return value


def _tls_wanted(tls: Mapping[str, Any]) -> bool:
    # Any setting at all asks for TLS: a min_version without a certificate is a mistake to
    # report, not a reason to serve plain HTTP.
    return any(value not in (None, "", []) for value in tls.values())


def _file(tls: Mapping[str, Any], key: str, base: Path) -> Path | None:
    name = _string(tls, key, "tls_server_config")
    if name is None:
        return None
    path = base / name
    try:
        path.read_bytes()
    except OSError as error:
        raise WebConfigError(f"tls_server_config.{key}: cannot read {path}: {error.strerror}"
                             ) from None  # fmt: skip
    return path


def _tls_version(tls: Mapping[str, Any], key: str, default: str) -> ssl.TLSVersion:
    name = _string(tls, key, "tls_server_config") or default
    if name not in TLS_VERSIONS:
        raise WebConfigError(f"tls_server_config.{key}: must be one of {', '.join(TLS_VERSIONS)}")
    return TLS_VERSIONS[name]


class _EncryptedKeyError(Exception):
    pass


def _no_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal and hang a service at start-up.
    raise _EncryptedKeyError


def _tls_context(tls: Mapping[str, Any], base: Path) -> tuple[ssl.SSLContext, str]:
    cert_file, key_file = _file(tls, "cert_file", base), _file(tls, "key_file", base)
    if cert_file is None or key_file is None:
        raise WebConfigError("tls_server_config: cert_file and key_file are both required")
    client_auth = _string(tls, "client_auth_type", "tls_server_config") or "NoClientCert"
    if client_auth in _UNVERIFIED_CLIENT_AUTH:
        raise WebConfigError(
            f"tls_server_config.client_auth_type: {client_auth} (a client certificate that is "
            "not verified) is not supported; use VerifyClientCertIfGiven or "
            "RequireAndVerifyClientCert with client_ca_file"
        )
    if client_auth not in CLIENT_AUTH:
        raise WebConfigError(
            f"tls_server_config.client_auth_type: must be one of {', '.join(CLIENT_AUTH)}"
        )
    verify_mode, needs_ca = CLIENT_AUTH[client_auth]
    ca_file = _file(tls, "client_ca_file", base)
    if needs_ca and ca_file is None:
        raise WebConfigError(f"tls_server_config: client_auth_type {client_auth} needs "
                             "client_ca_file, the CA that signs client certificates")  # fmt: skip
    if ca_file is not None and not needs_ca:
        raise WebConfigError("tls_server_config: client_ca_file is set but client_auth_type "
                             "does not verify client certificates")  # fmt: skip

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _tls_version(tls, "min_version", "TLS12")
    context.maximum_version = _tls_version(tls, "max_version", "TLS13")
    if context.minimum_version > context.maximum_version:
        raise WebConfigError("tls_server_config: min_version is newer than max_version")
    try:
        context.load_cert_chain(cert_file, key_file, password=_no_passphrase)
    except _EncryptedKeyError:
        raise WebConfigError("tls_server_config.key_file: the key is encrypted; give an "
                             "unencrypted key readable only by the exporter") from None  # fmt: skip
    except ssl.SSLError as error:
        raise WebConfigError(
            "tls_server_config: cert_file and key_file are not a matching PEM certificate and "
            f"private key ({error.reason or 'unreadable PEM'})"
        ) from None
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=ca_file)
        except ssl.SSLError:
            raise WebConfigError(f"tls_server_config.client_ca_file: no PEM certificate in "
                                 f"{ca_file}") from None  # fmt: skip
    context.verify_mode = verify_mode
    _ciphers(context, tls)
    if not _boolean(tls, "prefer_server_cipher_suites", "tls_server_config", default=True):
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_alpn_protocols(["http/1.1"])
    return context, client_auth


def _ciphers(context: ssl.SSLContext, tls: Mapping[str, Any]) -> None:
    suites = tls.get("cipher_suites")
    if suites in (None, []):
        return
    if not isinstance(suites, list) or not all(isinstance(s, str) for s in suites):
        raise WebConfigError("tls_server_config.cipher_suites: must be a list of names")
    unknown = [s for s in suites if s not in CIPHER_SUITES]
    if unknown:
        raise WebConfigError(f"tls_server_config.cipher_suites: unknown cipher suite "
                             f"{unknown[0]} (use Go's names, such as "
                             "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)")  # fmt: skip
    names = [name for s in suites if (name := CIPHER_SUITES[s]) is not None]
    if names:
        try:
            context.set_ciphers(":".join(names))
        except ssl.SSLError:
            raise WebConfigError("tls_server_config.cipher_suites: none of these suites is "
                                 "available in this build of OpenSSL") from None  # fmt: skip


def _users(value: object) -> dict[str, bytes]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WebConfigError("basic_auth_users: must be a mapping of user names to bcrypt hashes")
    users: dict[str, bytes] = {}
    for user, hashed in value.items():
        if not isinstance(user, str):
            raise WebConfigError(f"basic_auth_users: user name {user!r} must be a string "
                                 "(quote it)")  # fmt: skip
        if ":" in user:
            raise WebConfigError(f"basic_auth_users: user name {user!r} contains ':', which "
                                 "basic authentication cannot carry")  # fmt: skip
        # The value is never part of a message: it may be a password written in by mistake.
        if not isinstance(hashed, str) or not _BCRYPT_HASH.fullmatch(hashed):
            raise WebConfigError(
                f"basic_auth_users: the password of user {user!r} is not a bcrypt hash "
                "($2a$, $2b$ or $2y$); store a hash, never the password itself"
            )
        users[user] = hashed.encode("ascii")
    return users


def _headers(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WebConfigError("http_server_config.headers: must be a mapping of names to values")
    allowed = {name.lower(): name for name in SECURITY_HEADERS}
    headers: dict[str, str] = {}
    for name, header_value in value.items():
        canonical = allowed.get(name.lower()) if isinstance(name, str) else None
        if canonical is None:
            raise WebConfigError(f"http_server_config.headers: {name!r} cannot be configured "
                                 f"(allowed: {', '.join(SECURITY_HEADERS)})")  # fmt: skip
        where = f"http_server_config.headers.{canonical}"
        if header_value is None or header_value == "":
            continue  # the toolkit's "unset if blank"
        if not isinstance(header_value, str):
            raise WebConfigError(f"{where}: must be a string")
        if not header_value.isascii() or not header_value.isprintable():
            raise WebConfigError(f"{where}: must be printable ASCII on one line")
        choices = SECURITY_HEADERS[canonical]
        if choices and header_value.lower() not in choices:
            raise WebConfigError(f"{where}: must be one of {', '.join(choices)}")
        headers[canonical] = header_value
    return headers
