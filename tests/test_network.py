"""Which proxy the standard variables name for the API, what may be logged of it, and a CA file
that cannot be used.

The proxy is a pure function of a URL and a mapping: no environment of the test run is read.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.api.network import (
    CaFileError,
    Proxy,
    ProxySettingError,
    environment_proxy,
    tls_context,
)

API = "https://evotic.io/api/v1"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"HTTPS_PROXY": "http://proxy:3128"}, ("http://proxy:3128", "HTTPS_PROXY")),
        ({"https_proxy": "http://lower:1", "HTTPS_PROXY": "http://upper:2"},
         ("http://lower:1", "https_proxy")),
        ({"ALL_PROXY": "https://all:443"}, ("https://all:443", "ALL_PROXY")),
        ({"HTTPS_PROXY": "proxy:3128"}, ("http://proxy:3128", "HTTPS_PROXY")),
        # HTTP_PROXY is for http:// URLs, and an http:// API never uses a proxy.
        ({"HTTP_PROXY": "http://proxy:3128"}, None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "evotic.io"}, None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".evotic.io"}, None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, None),
        ({"HTTPS_PROXY": "http://p:1", "no_proxy": "other.example, EVOTIC.IO:443"}, None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "notevotic.io,io.evotic"},
         ("http://p:1", "HTTPS_PROXY")),
    ],
)  # fmt: skip
def test_the_proxy_comes_from_the_standard_variables(
    environ: dict[str, str], expected: tuple[str, str] | None
) -> None:
    proxy = environment_proxy(API, environ)
    assert ((proxy.url, proxy.variable) if proxy else None) == expected


@pytest.mark.parametrize(
    ("api", "no_proxy", "bypassed"),
    [
        ("https://10.1.2.3/v1", "10.0.0.0/8", True),
        ("https://10.1.2.3/v1", "10.1.2.3", True),
        ("https://192.168.1.1/v1", "10.0.0.0/8", False),
        ("https://[::1]:8443/v1", "::1", True),
        ("https://api.evotic.io/v1", "evotic.io", True),
        ("https://api.evotic.io/v1", "*.evotic.io", True),
    ],
)
def test_no_proxy_matches_domains_addresses_and_networks(
    api: str, no_proxy: str, bypassed: bool
) -> None:
    proxy = environment_proxy(api, {"HTTPS_PROXY": "http://p:1", "NO_PROXY": no_proxy})
    assert (proxy is None) == bypassed


def test_a_plain_http_api_never_gets_a_proxy() -> None:
    names = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
    every = dict.fromkeys(names, "http://proxy:3128")
    assert environment_proxy("http://127.0.0.1:8980/api/v1", every) is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("socks5://proxy:1080", "socks5:// proxies are not supported"),
        ("http://proxy:port", "port is not a number"),
        ("http://:3128", "has no host"),
    ],
)
def test_a_proxy_the_client_cannot_use_is_refused(value: str, problem: str) -> None:
    with pytest.raises(ProxySettingError) as caught:
        environment_proxy(API, {"HTTPS_PROXY": value})
    assert caught.value.variable == "HTTPS_PROXY"
    assert problem in caught.value.problem
    assert str(caught.value).startswith("invalid proxy variable HTTPS_PROXY: ")


def test_the_proxy_origin_leaves_its_credentials_out() -> None:
    proxy = Proxy("http://user:s3cret@proxy.example:3128", "HTTPS_PROXY")
    assert proxy.origin == "http://proxy.example:3128"
    assert "s3cret" not in repr(proxy)


def test_a_ca_file_without_a_certificate_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "ca.pem"
    empty.write_text("not a certificate\n")
    with pytest.raises(CaFileError, match="no PEM certificate"):
        tls_context(empty)


def test_an_empty_or_missing_ca_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    with pytest.raises(CaFileError, match="no PEM certificate"):
        tls_context(empty)
    with pytest.raises(CaFileError, match=r"cannot read .*: No such file or directory"):
        tls_context(tmp_path / "missing.pem")
