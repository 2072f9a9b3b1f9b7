"""Logging: JSON lines off a terminal, console on one, secrets blanked everywhere."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from exporter.runtime.logs import REDACTED, Redactor, configure_logging

SECRET = "s3cr3t-token-for-logging"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def test_json_lines_with_level_timestamp_and_redaction() -> None:
    stream = io.StringIO()
    redactor = Redactor()
    redactor.add(SECRET)
    configure_logging("info", "auto", redactor, stream)
    log = structlog.get_logger("t")
    log.info("poll failed", error=f"Bearer {SECRET} refused", reason="auth")
    log.debug("not shown")
    logging.getLogger("uvicorn.error").warning("from stdlib with %s", SECRET)
    logging.getLogger("httpx").info("HTTP Request: GET https://x/?t=%s", SECRET)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["poll failed", f"from stdlib with {REDACTED}"]
    assert lines[0]["error"] == f"Bearer {REDACTED} refused"
    assert lines[0]["level"] == "info"
    assert lines[0]["timestamp"].endswith("Z")
    assert SECRET not in stream.getvalue()


def test_console_on_a_terminal_and_debug_level() -> None:
    stream = _Tty()
    configure_logging("debug", "auto", Redactor(), stream)
    structlog.get_logger("t").debug("hello", servers=3)
    output = stream.getvalue()
    assert "hello" in output
    assert "servers" in output
    assert not output.lstrip().startswith("{")


def test_short_strings_are_not_treated_as_secrets() -> None:
    redactor = Redactor()
    redactor.add("ab")
    assert redactor.scrub("abc") == "abc"
