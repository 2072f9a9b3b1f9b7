"""The web configuration file (``--web.config.file``): TLS, basic auth and security headers.

The format is the Prometheus exporter-toolkit's, so one file can serve this exporter and the
Go exporters next to it. The file is read at start-up, and everything in it is checked and
built there: certificates are loaded into an ``HttpsContext`` and every password must be a
bcrypt hash, so a mistake stops the exporter with one line instead of failing a scrape later.
A key of that format which this exporter cannot honour is refused by name, never ignored.
The certificate files it names are read again when they change (``TlsFiles``, used by
``certificates.py``).

The file's shape is ``WebConfigFile`` and the models in it; what needs the file system
(reading the certificates, building the context) happens after the shape is known to be right.
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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, ClassVar, Literal, Self, get_args

import bcrypt
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    StrictBool,
    StrictStr,
    field_validator,
    model_validator,
)

from exporter.settings.model import Settings, file_problem
from exporter.settings.schema import FileError, KeyProblem, Schema, load_file, one_of
from exporter.web.server import HttpsContext

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

_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_DECOY_PASSWORD = b"evotic-exporter decoy password"

_NOT_SUPPORTED = "is not supported by evotic-exporter"


class WebConfigError(FileError):
    """The web configuration cannot be used: ``path``, ``key`` and ``problem`` say why.

    ``str()`` is one line and holds no secret.
    """


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

    tls_server: LoadedTls | None = None
    client_auth: str = "NoClientCert"
    auth: BasicAuth | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # Accepted for compatibility with the toolkit's files; the server speaks HTTP/1.1 only.
    http2: bool = True
    # The TLS key's path, so that start-up can warn if other users may read it.
    key_file: Path | None = None

    @property
    def tls(self) -> bool:
        return self.tls_server is not None

    @property
    def ssl_context(self) -> HttpsContext | None:
        return self.tls_server.context if self.tls_server is not None else None


def _one_printable_line(value: str) -> str:
    if not value.isascii() or not value.isprintable():
        raise ValueError("must be printable ASCII on one line")
    return value


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _cipher_suite(name: str) -> str:
    if name not in CIPHER_SUITES:
        raise ValueError(f"unknown cipher suite {name} (use Go's names, such as "
                         "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)")  # fmt: skip
    return name


TlsVersionName = Literal["TLS10", "TLS11", "TLS12", "TLS13"]
ClientAuthType = Literal["NoClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"]
_FrameOptions = Literal["deny", "sameorigin"]
_TlsVersion = Annotated[TlsVersionName, one_of(get_args(TlsVersionName))]
_ClientAuth = Annotated[ClientAuthType, one_of(get_args(ClientAuthType))]
_CipherSuite = Annotated[StrictStr, AfterValidator(_cipher_suite)]
_HeaderValue = Annotated[StrictStr, AfterValidator(_one_printable_line)]
# The toolkit compares these values without regard to case; they are sent in lower case.
_FrameOptionsValue = Annotated[_FrameOptions, one_of(get_args(_FrameOptions)),
                               BeforeValidator(_lower)]  # fmt: skip
_ContentTypeOptions = Annotated[Literal["nosniff"], one_of(("nosniff",)), BeforeValidator(_lower)]


class TlsServerConfig(Schema):
    """``tls_server_config``: any key set asks for TLS, and then a certificate is required.

    A ``min_version`` without a certificate is a mistake to report, not a reason to serve
    plain HTTP.
    """

    refused: ClassVar[Mapping[str, str]] = MappingProxyType({
        "cert": "inline PEM is not supported; use cert_file",
        "key": "inline PEM is not supported; use key_file",
        "client_ca": "inline PEM is not supported; use client_ca_file",
        "client_allowed_sans": _NOT_SUPPORTED,
        "curve_preferences": _NOT_SUPPORTED,
    })  # fmt: skip
    blank_is_unset: ClassVar[bool] = True

    cert_file: StrictStr | None = None
    key_file: StrictStr | None = None
    client_ca_file: StrictStr | None = None
    client_auth_type: _ClientAuth = "NoClientCert"
    min_version: _TlsVersion = "TLS12"
    max_version: _TlsVersion = "TLS13"
    cipher_suites: tuple[_CipherSuite, ...] = ()
    prefer_server_cipher_suites: StrictBool = True

    @property
    def wanted(self) -> bool:
        return bool(self.model_fields_set)

    @field_validator("client_auth_type", mode="before")
    @classmethod
    def _verified(cls, value: object) -> object:
        if value in _UNVERIFIED_CLIENT_AUTH:
            raise ValueError(
                f"{value} (a client certificate that is not verified) is not supported; use "
                "VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file"
            )
        return value

    @field_validator("cipher_suites", mode="before")
    @classmethod
    def _a_list(cls, value: object) -> object:
        if not isinstance(value, list):
            raise ValueError("must be a list of names")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not self.wanted:
            return self
        if self.cert_file is None or self.key_file is None:
            raise ValueError("cert_file and key_file are both required")
        needs_ca = CLIENT_AUTH[self.client_auth_type][1]
        if needs_ca and self.client_ca_file is None:
            raise ValueError(f"client_auth_type {self.client_auth_type} needs client_ca_file, "
                             "the CA that signs client certificates")  # fmt: skip
        if self.client_ca_file is not None and not needs_ca:
            raise ValueError("client_ca_file is set but client_auth_type does not verify "
                             "client certificates")  # fmt: skip
        if TLS_VERSIONS[self.min_version] > TLS_VERSIONS[self.max_version]:
            raise ValueError("min_version is newer than max_version")
        return self


class SecurityHeaders(Schema):
    """The headers the toolkit lets a file add, and the values it allows where it restricts them.

    Kept to this list on purpose, as the toolkit does, so the ecosystem's files stay portable.
    A blank value leaves the header out.
    """

    blank_is_unset: ClassVar[bool] = True

    content_security_policy: _HeaderValue | None = Field(
        default=None, alias="Content-Security-Policy"
    )
    x_frame_options: _FrameOptionsValue | None = Field(default=None, alias="X-Frame-Options")
    x_content_type_options: _ContentTypeOptions | None = Field(
        default=None, alias="X-Content-Type-Options"
    )
    x_xss_protection: _HeaderValue | None = Field(default=None, alias="X-XSS-Protection")
    strict_transport_security: _HeaderValue | None = Field(
        default=None, alias="Strict-Transport-Security"
    )

    @classmethod
    def names(cls) -> list[str]:
        return [field.alias or name for name, field in cls.model_fields.items()]

    def as_mapping(self) -> Mapping[str, str]:
        return MappingProxyType(self.model_dump(by_alias=True, exclude_none=True))


class HttpServerConfig(Schema):
    """``http_server_config``: the security headers to send, and ``http2``."""

    blank_is_unset: ClassVar[bool] = True

    # Accepted for compatibility with the toolkit's files; the server speaks HTTP/1.1 only.
    http2: StrictBool = True
    headers: SecurityHeaders = SecurityHeaders()

    @field_validator("headers", mode="before")
    @classmethod
    def _canonical_names(cls, value: object) -> object:
        # HTTP header names ignore case; the file may write them either way.
        if not isinstance(value, dict):
            return value
        names = SecurityHeaders.names()
        canonical = {name.lower(): name for name in names}
        headers: dict[str, object] = {}
        for name, header_value in value.items():
            proper = canonical.get(name.lower()) if isinstance(name, str) else None
            if proper is None:
                raise ValueError(f"{name!r} cannot be configured (allowed: {', '.join(names)})")
            if proper in headers:
                raise KeyProblem(proper, "is given twice (header names ignore case)")
            headers[proper] = header_value
        return headers


class WebConfigFile(Schema):
    """The web configuration file, in exporter-toolkit's format."""

    refused: ClassVar[Mapping[str, str]] = MappingProxyType({"rate_limit": _NOT_SUPPORTED})
    blank_is_unset: ClassVar[bool] = True

    tls_server_config: TlsServerConfig = TlsServerConfig()
    http_server_config: HttpServerConfig = HttpServerConfig()
    basic_auth_users: dict[StrictStr, StrictStr] = Field(default_factory=dict)

    @field_validator("basic_auth_users", mode="before")
    @classmethod
    def _bcrypt_hashes(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        for user, hashed in value.items():
            if not isinstance(user, str):
                raise ValueError(f"user name {user!r} must be a string (quote it)")
            if ":" in user:
                raise ValueError(f"user name {user!r} contains ':', which basic authentication "
                                 "cannot carry")  # fmt: skip
            # The value is never part of a message: it may be a password written in by mistake.
            if not isinstance(hashed, str) or not _BCRYPT_HASH.fullmatch(hashed):
                raise ValueError(
                    f"the password of user {user!r} is not a bcrypt hash ($2a$, $2b$ or $2y$); "
                    "store a hash, never the password itself"
                )
        return value


def load_web_config(path: Path) -> WebConfig:
    """Read, check and build the web configuration in ``path``; ``WebConfigError`` if unusable.

    Relative file names inside it are taken relative to the file's own directory, as the
    toolkit does.
    """
    document = load_file(path, WebConfigFile, WebConfigError)
    tls = document.tls_server_config
    users = {user: hashed.encode("ascii") for user, hashed in document.basic_auth_users.items()}
    return WebConfig(
        tls_server=TlsFiles(tls, path).load() if tls.wanted else None,
        client_auth=tls.client_auth_type,
        auth=BasicAuth(users) if users else None,
        headers=document.http_server_config.headers.as_mapping(),
        http2=document.http_server_config.http2,
        key_file=path.parent / tls.key_file if tls.wanted and tls.key_file else None,
    )


# One entry per file a server context is built from: its key in ``tls_server_config`` and the
# SHA-256 of its contents, or why it cannot be read. Equal fingerprints, equal files.
Fingerprint = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class TlsFiles:
    """``tls_server_config`` and the file it is in: what a server context is built from.

    The names in it are relative to ``config``'s folder, and errors name ``config``.
    """

    settings: TlsServerConfig
    config: Path

    def paths(self) -> dict[str, Path]:
        """The certificate, key and client CA files, by their key in ``tls_server_config``."""
        names = {"cert_file": self.settings.cert_file, "key_file": self.settings.key_file,
                 "client_ca_file": self.settings.client_ca_file}  # fmt: skip
        return {key: self.config.parent / name for key, name in names.items() if name is not None}

    def fingerprint(self) -> Fingerprint:
        """What the files hold now."""
        return tuple((key, _digest(path)) for key, path in self.paths().items())

    def load(self) -> LoadedTls:
        """A server context built from the files as they are now; ``WebConfigError`` if the
        files cannot make one."""
        # Taken before the files are read again to build: a change in between is then seen at
        # the next look instead of being taken for what was built.
        fingerprint = self.fingerprint()
        return LoadedTls(self, _tls_context(self.settings, self.config), fingerprint)

    def configure(self, context: ssl.SSLContext) -> None:
        """Give ``context`` the settings that connections copy from the context they are made
        with (see ``_connection_settings``)."""
        _connection_settings(context, self.settings)


@dataclass(frozen=True)
class LoadedTls:
    """A server context, the files it was built from, and what those files held then."""

    files: TlsFiles
    context: HttpsContext
    fingerprint: Fingerprint


def _digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as error:
        return f"unreadable: {error.strerror}"


class _EncryptedKeyError(Exception):
    pass


def _no_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal and hang a service at start-up.
    raise _EncryptedKeyError


def _tls_error(config: Path, key: str | None, problem: str) -> WebConfigError:
    return WebConfigError(config, f"tls_server_config.{key}" if key else "tls_server_config",
                          problem)  # fmt: skip


def _readable(name: str | None, key: str, config: Path) -> Path | None:
    if name is None:
        return None
    path = config.parent / name
    try:
        path.read_bytes()
    except OSError as error:
        raise _tls_error(config, key, f"cannot read {path}: {error.strerror}") from None
    return path


def _tls_context(tls: TlsServerConfig, config: Path) -> HttpsContext:
    """The server's ``SSLContext``; ``config`` is the web configuration file, for errors."""
    cert_file = _readable(tls.cert_file, "cert_file", config)
    key_file = _readable(tls.key_file, "key_file", config)
    ca_file = _readable(tls.client_ca_file, "client_ca_file", config)
    if cert_file is None or key_file is None:  # the schema asks for both already
        raise _tls_error(config, None, "cert_file and key_file are both required")

    context = HttpsContext(ssl.PROTOCOL_TLS_SERVER)
    _connection_settings(context, tls)
    try:
        context.load_cert_chain(cert_file, key_file, password=_no_passphrase)
    except _EncryptedKeyError:
        raise _tls_error(config, "key_file", "the key is encrypted; give an unencrypted key "
                         "readable only by the exporter") from None  # fmt: skip
    except ssl.SSLError as error:
        raise _tls_error(config, None, f"cert_file {cert_file} and key_file {key_file} are not "
                         "a matching PEM certificate and private key "
                         f"({error.reason or 'unreadable PEM'})") from None  # fmt: skip
    except OSError as error:  # gone since it was read: a renewal replacing it, say
        raise _tls_error(config, None, f"cannot read {cert_file} or {key_file}: "
                         f"{error.strerror}") from None  # fmt: skip
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=ca_file)
        except ssl.SSLError:
            raise _tls_error(config, "client_ca_file", f"no PEM certificate in {ca_file}") from None
        except OSError as error:
            raise _tls_error(config, "client_ca_file",
                             f"cannot read {ca_file}: {error.strerror}") from None  # fmt: skip
    names = [name for suite in tls.cipher_suites if (name := CIPHER_SUITES[suite]) is not None]
    if names:
        try:
            context.set_ciphers(":".join(names))
        except ssl.SSLError:
            raise _tls_error(config, "cipher_suites", "none of these suites is available in "
                             "this build of OpenSSL") from None  # fmt: skip
    context.set_alpn_protocols(["http/1.1"])
    return context


def _connection_settings(context: ssl.SSLContext, tls: TlsServerConfig) -> None:
    """What each connection copies from its context when it is made: the protocol versions,
    whether to verify a client certificate, and the options."""
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    context.maximum_version = TLS_VERSIONS[tls.max_version]
    context.verify_mode = CLIENT_AUTH[tls.client_auth_type][0]
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE


def load_web(settings: Settings) -> WebConfig:
    """The checked web configuration (TLS, basic auth, headers); plain HTTP without a file."""
    if settings.web_config_file is None:
        return WebConfig()
    try:
        return load_web_config(settings.web_config_file)
    except WebConfigError as error:
        raise file_problem("web_config_file", error) from None
