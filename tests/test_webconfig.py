"""The web configuration file: strict loading, TLS contexts, and the basic-auth verifier."""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import bcrypt
import pytest

from exporter.settings.loading import load_settings
from exporter.settings.model import SettingsError
from exporter.web.config import (
    CIPHER_SUITES,
    CLIENT_AUTH,
    TLS_VERSIONS,
    BasicAuth,
    ClientAuthType,
    TlsVersionName,
    WebConfig,
    WebConfigError,
    load_web,
    load_web_config,
    make_decoy_hash,
    parse_basic_authorization,
)

PLAINTEXT = "canary-plaintext-Pa55word"
PASSWORD = b"scrape-secret"
HASH = bcrypt.hashpw(PASSWORD, bcrypt.gensalt(rounds=4)).decode()


@dataclass(frozen=True)
class Pki:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""

    directory: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    encrypted_key: Path

    def client_context(
        self, *, with_cert: bool = False, max_version: ssl.TLSVersion | None = None
    ) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        if with_cert:
            context.load_cert_chain(self.client_cert, self.client_key)
        if max_version is not None:
            context.maximum_version = max_version
        return context


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(directory: Path) -> Pki:
    """Make a CA and two leaf certificates it signs, with the openssl command-line tool."""
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=evotic-exporter test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)  # fmt: skip
    leaves = {
        "server": ("/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        "client": ("/CN=prometheus", "extendedKeyUsage=clientAuth\n"),
    }
    for name, (subject, extensions) in leaves.items():
        (directory / f"{name}.ext").write_text(extensions)
        _openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", subject, cwd=directory)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
                 "-out", f"{name}.pem", cwd=directory)  # fmt: skip
    _openssl("pkey", "-in", "server.key", "-aes256", "-passout", "pass:unused",
             "-out", "encrypted.key", cwd=directory)  # fmt: skip
    return Pki(directory, directory / "ca.pem", directory / "server.pem",
               directory / "server.key", directory / "client.pem", directory / "client.key",
               directory / "encrypted.key")  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _write(directory: Path, text: str) -> Path:
    path = directory / "web.yml"
    path.write_text(text, encoding="utf-8")
    return path


def _error(directory: Path, text: str) -> str:
    with pytest.raises(WebConfigError) as caught:
        load_web_config(_write(directory, text))
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- loading -------------------------------------------------------------------------------


def test_an_empty_file_means_plain_http_without_auth(tmp_path: Path) -> None:
    web = load_web_config(_write(tmp_path, ""))
    assert web == WebConfig()
    assert not web.tls
    assert web.auth is None
    assert dict(web.headers) == {}


def test_a_full_file_builds_a_context_a_verifier_and_headers(tmp_path: Path, pki: Pki) -> None:
    web = load_web_config(_write(tmp_path, f"""
tls_server_config:
  cert_file: {pki.server_cert}
  key_file: {pki.server_key}
  client_ca_file: {pki.ca}
  client_auth_type: RequireAndVerifyClientCert
  min_version: TLS13
  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]
  prefer_server_cipher_suites: false
http_server_config:
  http2: false
  headers:
    X-Frame-Options: deny
    x-content-type-options: nosniff
    Strict-Transport-Security: max-age=31536000
    Content-Security-Policy: ""
basic_auth_users:
  prometheus: '{HASH}'
"""))  # fmt: skip
    context = web.ssl_context
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert context.maximum_version == ssl.TLSVersion.TLSv1_3
    assert not context.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"} == {
        "ECDHE-ECDSA-AES128-GCM-SHA256"
    }
    assert web.client_auth == "RequireAndVerifyClientCert"
    assert web.http2 is False
    assert dict(web.headers) == {"X-Frame-Options": "deny", "X-Content-Type-Options": "nosniff",
                                 "Strict-Transport-Security": "max-age=31536000"}  # fmt: skip
    assert web.auth is not None
    assert web.auth.users == {"prometheus"}


def test_defaults_and_relative_paths(tmp_path: Path, pki: Pki) -> None:
    web = load_web_config(_write(pki.directory, "tls_server_config:\n"
                                 "  cert_file: server.pem\n  key_file: server.key\n"))  # fmt: skip
    assert web.ssl_context is not None
    assert web.ssl_context.verify_mode == ssl.CERT_NONE
    assert web.ssl_context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert web.ssl_context.maximum_version == ssl.TLSVersion.TLSv1_3
    assert web.client_auth == "NoClientCert"


def test_the_key_files_path_is_kept_for_the_permission_check(tmp_path: Path, pki: Pki) -> None:
    relative = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
    assert load_web_config(_write(pki.directory, relative)).key_file == pki.server_key
    assert load_web_config(_write(tmp_path, _tls(pki))).key_file == pki.server_key
    assert load_web_config(_write(tmp_path, f"basic_auth_users:\n  a: {HASH}\n")).key_file is None


def test_verify_if_given_is_optional(tmp_path: Path, pki: Pki) -> None:
    web = load_web_config(_write(tmp_path, f"""
tls_server_config:
  cert_file: {pki.server_cert}
  key_file: {pki.server_key}
  client_ca_file: {pki.ca}
  client_auth_type: VerifyClientCertIfGiven
"""))  # fmt: skip
    assert web.ssl_context is not None
    assert web.ssl_context.verify_mode == ssl.CERT_OPTIONAL


def test_every_cipher_suite_name_is_known_to_openssl() -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for openssl_name in filter(None, CIPHER_SUITES.values()):
        context.set_ciphers(openssl_name)


def test_a_plaintext_password_is_refused_without_echoing_it(tmp_path: Path) -> None:
    message = _error(tmp_path, f"basic_auth_users:\n  alice: '{HASH}'\n  bob: {PLAINTEXT}\n")
    assert "'bob'" in message
    assert "not a bcrypt hash" in message
    assert PLAINTEXT not in message


@pytest.mark.parametrize(
    "value",
    [
        "$2b$10$short",
        "$1$abcdefgh$abcdefghijklmnopqrstuv",  # md5-crypt
        "$2x$04$" + "a" * 53,
        "$2b$03$" + "a" * 53,  # below bcrypt's minimum cost
        "$2b$04$" + "a" * 52 + "!",
        "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",
        "12345",
    ],
)
def test_anything_but_a_bcrypt_hash_is_refused(tmp_path: Path, value: str) -> None:
    message = _error(tmp_path, f"basic_auth_users:\n  alice: '{value}'\n")
    assert "alice" in message
    assert value not in message


def test_bcrypt_variants_are_accepted(tmp_path: Path) -> None:
    for prefix in ("$2a$", "$2b$", "$2y$"):
        web = load_web_config(_write(tmp_path, f"basic_auth_users:\n  a: '{prefix}{HASH[4:]}'\n"))
        assert web.auth is not None


def test_a_yaml_error_reports_the_position_not_the_line(tmp_path: Path) -> None:
    message = _error(tmp_path, f"basic_auth_users:\n  alice: {PLAINTEXT}: x\n")
    assert "line 2" in message
    assert PLAINTEXT not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tls_config: {}\n", "tls_config: unknown key"),
        ("tls_server_config:\n  certfile: x\n", "tls_server_config.certfile: unknown key"),
        ("http_server_config:\n  header: {}\n", "http_server_config.header: unknown key"),
        ("rate_limit:\n  burst: 1\n", "rate_limit: is not supported"),
        ("tls_server_config:\n  cert: x\n", "inline PEM is not supported; use cert_file"),
        ("tls_server_config:\n  client_allowed_sans: [a]\n", "client_allowed_sans: is not"),
        ("- a\n", "the file: must be a mapping"),
        ("basic_auth_users: [a]\n", "basic_auth_users: must be a mapping"),
        (f"basic_auth_users:\n  a: '{HASH}'\n  a: '{HASH}'\n", "key 'a' is given twice"),
        (f"basic_auth_users:\n  'a:b': '{HASH}'\n", "contains ':'"),
        (f"basic_auth_users:\n  1: '{HASH}'\n", "must be a string"),
        ("http_server_config:\n  http2: maybe\n", "http2: must be true or false"),
        ("http_server_config:\n  headers:\n    Server: x\n", "'Server' cannot be configured"),
        ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n", "deny, sameorigin"),
        ("http_server_config:\n  headers:\n    X-Content-Type-Options: x\n", "nosniff"),
        ("http_server_config:\n  headers:\n    X-XSS-Protection: \"1\\r\\nX: y\"\n",
         "printable ASCII"),
        ("tls_server_config:\n  min_version: TLS12\n", "cert_file and key_file are both required"),
    ],
)  # fmt: skip
def test_mistakes_are_refused_with_one_line(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in _error(tmp_path, text)


def _tls(pki: Pki, extra: str = "", key: Path | None = None) -> str:
    return (f"tls_server_config:\n  cert_file: {pki.server_cert}\n"
            f"  key_file: {key or pki.server_key}\n{extra}")  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("  min_version: TLS14\n", "min_version: must be one of TLS10, TLS11, TLS12, TLS13"),
        ("  min_version: TLS13\n  max_version: TLS12\n", "min_version is newer than max_version"),
        ("  client_auth_type: Sometimes\n", "client_auth_type: must be one of NoClientCert"),
        ("  client_auth_type: RequireAnyClientCert\n", "is not supported"),
        ("  client_auth_type: RequestClientCert\n", "is not supported"),
        ("  client_auth_type: RequireAndVerifyClientCert\n", "needs client_ca_file"),
        ("  client_ca_file: {ca}\n", "client_auth_type does not verify client certificates"),
        ("  client_ca_file: {key}\n  client_auth_type: VerifyClientCertIfGiven\n",
         "client_ca_file: no PEM certificate"),
        ("  client_ca_file: missing.pem\n  client_auth_type: VerifyClientCertIfGiven\n",
         "client_ca_file: cannot read"),
        ("  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n", "unknown cipher suite"),
        ("  cipher_suites: TLS_AES_128_GCM_SHA256\n", "must be a list of names"),
        ("  curve_preferences: [X25519]\n", "curve_preferences: is not supported"),
    ],
)  # fmt: skip
def test_tls_mistakes_are_refused(tmp_path: Path, pki: Pki, extra: str, expected: str) -> None:
    text = _tls(pki, extra.format(ca=pki.ca, key=pki.server_key))
    assert expected in _error(tmp_path, text)


def test_unusable_certificates_are_refused_at_load(tmp_path: Path, pki: Pki) -> None:
    assert "cert_file: cannot read" in _error(
        tmp_path, f"tls_server_config:\n  cert_file: {tmp_path}/nope.pem\n  key_file: x\n"
    )
    assert "not a matching PEM certificate and private key" in _error(
        tmp_path, _tls(pki, key=pki.client_key)
    )
    assert "the key is encrypted" in _error(tmp_path, _tls(pki, key=pki.encrypted_key))


def test_the_command_line_names_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("EVOTIC_")]:
        monkeypatch.delenv(name)
    path = _write(tmp_path, f"basic_auth_users:\n  bob: {PLAINTEXT}\n")
    settings = load_settings(["--demo", "--web.config.file", str(path)])
    with pytest.raises(SettingsError) as caught:
        load_web(settings)
    assert str(caught.value).startswith(
        f"invalid setting EVOTIC_WEB_CONFIG_FILE (--web.config.file): {path}: basic_auth_users:"
    )
    assert PLAINTEXT not in str(caught.value)
    assert load_web(load_settings(["--demo"])) == WebConfig()


# --- basic auth ----------------------------------------------------------------------------


class CountingChecker:
    """bcrypt.checkpw, counting calls and the hashes it was asked about."""

    def __init__(self, delay: float = 0.0) -> None:
        self.hashes: list[bytes] = []
        self.delay = delay
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        with self._lock:
            self.hashes.append(hashed)
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            time.sleep(self.delay)
            return bcrypt.checkpw(password, hashed)
        finally:
            with self._lock:
                self.running -= 1


def basic(user: str | bytes, password: bytes) -> bytes:
    name = user.encode() if isinstance(user, str) else user
    return b"Basic " + base64.b64encode(name + b":" + password)


DECOY = make_decoy_hash([HASH.encode()])


@pytest.fixture
def checker() -> CountingChecker:
    return CountingChecker()


@pytest.fixture
def auth(checker: CountingChecker) -> BasicAuth:
    return BasicAuth({"prometheus": HASH.encode()}, check=checker, decoy_hash=DECOY)


def _run(auth: BasicAuth, *headers: bytes | None) -> list[bool]:
    async def all_of() -> list[bool]:
        return [await auth.authenticate(header) for header in headers]

    return asyncio.run(all_of())


def test_the_right_password_is_checked_once_then_remembered(
    auth: BasicAuth, checker: CountingChecker
) -> None:
    assert _run(auth, *[basic("prometheus", PASSWORD)] * 20) == [True] * 20
    assert checker.hashes == [HASH.encode()]


def test_wrong_passwords_are_never_remembered(auth: BasicAuth, checker: CountingChecker) -> None:
    headers = [basic("prometheus", PASSWORD), basic("prometheus", b"wrong"),
               basic("prometheus", b"wrong"), basic("prometheus", PASSWORD)]  # fmt: skip
    assert _run(auth, *headers) == [True, False, False, True]
    assert len(checker.hashes) == 3


def test_an_unknown_user_costs_a_check_against_the_decoy(
    auth: BasicAuth, checker: CountingChecker
) -> None:
    assert _run(auth, basic("nobody", PASSWORD), basic("nobody", PASSWORD)) == [False, False]
    assert checker.hashes == [DECOY, DECOY]


def test_the_decoy_costs_as_much_as_the_dearest_hash() -> None:
    cheap = bcrypt.hashpw(b"a", bcrypt.gensalt(rounds=4))
    dear = bcrypt.hashpw(b"b", bcrypt.gensalt(rounds=5))
    assert make_decoy_hash([cheap, dear]).startswith(b"$2b$05$")


@pytest.mark.parametrize(
    "header",
    [
        None,
        b"",
        b"Bearer abc",
        b"Basic",
        b"Basic !!!not-base64!!!",
        b"Basic " + base64.b64encode(b"no-colon"),
        basic(b"\xff\xfe", PASSWORD),
    ],
)
def test_malformed_headers_are_refused_without_a_check(
    auth: BasicAuth, checker: CountingChecker, header: bytes | None
) -> None:
    assert _run(auth, header) == [False]
    assert checker.hashes == []


def test_the_scheme_is_case_insensitive_and_passwords_may_hold_colons() -> None:
    assert parse_basic_authorization(basic("u", b"a:b").replace(b"Basic", b"bAsIc")) == (
        "u",
        b"a:b",
    )


def test_an_over_long_password_is_refused_not_an_error() -> None:
    real = BasicAuth({"prometheus": HASH.encode()}, decoy_hash=DECOY)
    assert _run(real, basic("prometheus", b"x" * 100), basic("nobody", b"x" * 100)) == [
        False,
        False,
    ]


def test_checks_run_off_the_loop_and_at_most_two_at_once() -> None:
    checker = CountingChecker(delay=0.05)
    auth = BasicAuth({"prometheus": HASH.encode()}, check=checker, decoy_hash=DECOY,
                     max_concurrent_checks=2)  # fmt: skip

    async def flood() -> tuple[list[bool], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        results = await asyncio.gather(
            *(auth.authenticate(basic("prometheus", b"wrong-%d" % i)) for i in range(10))
        )
        task.cancel()
        return results, ticks

    results, ticks = asyncio.run(flood())
    assert results == [False] * 10
    assert checker.most_at_once == 2
    # Ten checks of 50 ms two at a time take some 250 ms; the loop kept ticking through them.
    assert ticks >= 5


# --- the schema ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ('http_server_config:\n  http2: "yes"\n', "http_server_config.http2",
         "must be true or false"),
        ("tls_server_config:\n  cert_file: 5\n", "tls_server_config.cert_file",
         "must be a string"),
        ("tls_server_config:\n  prefer_server_cipher_suites: 1\n",
         "tls_server_config.prefer_server_cipher_suites", "must be true or false"),
        ("tls_server_config:\n  cipher_suites: [TLS_AES_128_GCM_SHA256, 7]\n",
         "tls_server_config.cipher_suites[1]", "must be a string"),
        ("tls_server_config:\n  max_version: tls13\n", "tls_server_config.max_version",
         "must be one of TLS10, TLS11, TLS12, TLS13"),
        ("http_server_config:\n  headers:\n    Strict-Transport-Security: 31536000\n",
         "http_server_config.headers.Strict-Transport-Security", "must be a string"),
        ("http_server_config:\n  headers:\n    x-frame-options: deny\n    X-FRAME-OPTIONS: deny\n",
         "http_server_config.headers.X-Frame-Options", "is given twice (header names ignore case)"),
        ("http_server_config: [http2]\n", "http_server_config",
         "must be a mapping of keys to values"),
        ("tls_server_config:\n  curve_preferences: [X25519]\n",
         "tls_server_config.curve_preferences", "is not supported by evotic-exporter"),
        ("tls_server_config:\n  min_version: TLS12\n", "tls_server_config",
         "cert_file and key_file are both required"),
    ],
)  # fmt: skip
def test_a_mistake_names_its_key_in_fields(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(WebConfigError) as caught:
        load_web_config(path)
    assert (caught.value.path, caught.value.key, caught.value.problem) == (path, key, problem)
    assert str(caught.value) == f"{key}: {problem}"


def test_a_file_error_names_the_certificate_key(tmp_path: Path, pki: Pki) -> None:
    path = _write(tmp_path, _tls(pki, key=pki.encrypted_key))
    with pytest.raises(WebConfigError) as caught:
        load_web_config(path)
    assert caught.value.path == path
    assert caught.value.key == "tls_server_config.key_file"
    assert caught.value.problem.startswith("the key is encrypted")


@pytest.mark.parametrize(
    "text",
    [
        "tls_server_config:\n  min_version: TLS12\n  min_version: TLS13\n",
        "http_server_config: {}\nbasic_auth_users: {}\nhttp_server_config: {}\n",
        f"basic_auth_users:\n  bob: {PLAINTEXT}\n  bob: '{HASH}'\n",
    ],
)
def test_a_key_given_twice_is_refused_with_its_line(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(WebConfigError) as caught:
        load_web_config(path)
    assert caught.value.key is None
    assert caught.value.problem.startswith(f"{path} is not valid YAML at line 3, column ")
    assert "is given twice" in caught.value.problem
    assert PLAINTEXT not in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        f"basic_auth_users:\n  bob: [{PLAINTEXT}]\n",
        f"basic_auth_users:\n  bob: {{password: {PLAINTEXT}}}\n",
        f"tls_server_config:\n  cert_file: [{PLAINTEXT}]\n",
        f"http_server_config:\n  http2: {PLAINTEXT}\n",
        f"http_server_config:\n  headers:\n    X-Frame-Options: {PLAINTEXT}\n",
        f"tls_server_config:\n  min_version: {PLAINTEXT}\n",
    ],
)
def test_a_wrong_value_is_never_quoted(tmp_path: Path, text: str) -> None:
    assert PLAINTEXT not in _error(tmp_path, text)


def test_blank_values_leave_keys_unset(tmp_path: Path) -> None:
    web = load_web_config(_write(tmp_path, """
tls_server_config:
  cert_file: ""
  cipher_suites: []
  min_version:
http_server_config:
  http2:
  headers:
    X-Frame-Options: ""
basic_auth_users:
"""))  # fmt: skip
    assert web == WebConfig()


def test_restricted_header_values_ignore_case(tmp_path: Path) -> None:
    web = load_web_config(_write(tmp_path, "http_server_config:\n  headers:\n"
                                 "    X-Frame-Options: SameOrigin\n"
                                 "    X-Content-Type-Options: NOSNIFF\n"))  # fmt: skip
    assert dict(web.headers) == {"X-Frame-Options": "sameorigin",
                                 "X-Content-Type-Options": "nosniff"}  # fmt: skip


def test_the_choices_of_the_schema_are_those_the_context_knows() -> None:
    assert get_args(TlsVersionName) == tuple(TLS_VERSIONS)
    assert get_args(ClientAuthType) == tuple(CLIENT_AUTH)
