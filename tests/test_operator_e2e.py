"""Operator tools end to end, as processes: a poll on demand (``POST /-/poll``, and after a
reload) and the landing page under basic auth."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import bcrypt
import httpx
import pytest

from .processes import exporter, simulator, wait_until

pytestmark = pytest.mark.e2e
TOKEN = "operator-e2e-token-44b1"


def _listings(sim_url: str) -> int:
    return int(httpx.get(f"{sim_url}/_simulator/stats").json()["servers"])


def test_a_poll_on_demand_comes_at_once_and_a_reload_polls_too(tmp_path: Path) -> None:
    with simulator(tmp_path, "--servers", "5", token=TOKEN) as sim:
        token = tmp_path / "token"
        token.write_text("wrong-token")
        token.chmod(0o600)
        args = ("--api.url", f"{sim.url}/api/v1", "--api.token-file", str(token),
                "--poll.interval", "3600", "--poll.stale-after", "7200",
                "--web.enable-lifecycle")  # fmt: skip
        with exporter(tmp_path, *args, wait_ready=False) as proc:
            wait_until(lambda: "poll failed" in proc.output(), what="the first poll")
            polls = _listings(sim.url)
            # The token is fixed; nobody waits an hour: the poll comes on demand.
            token.write_text(TOKEN)
            answer = httpx.post(f"{proc.url}/-/poll")
            assert (answer.status_code, answer.text) == (202, "polling default\n")
            wait_until(lambda: httpx.get(f"{proc.url}/readyz").status_code == 200,
                       timeout=10, what="the poll on demand")  # fmt: skip
            assert _listings(sim.url) == polls + 1
            # A reload polls at once as well.
            proc.popen.send_signal(signal.SIGHUP)
            wait_until(lambda: _listings(sim.url) == polls + 2, timeout=10, what="a reload's poll")
            assert TOKEN not in proc.output()


def test_landing_page_says_how_each_account_is_under_basic_auth(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"landing-pw", bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  ops: '{hashed}'\n")
    web.chmod(0o600)
    config = tmp_path / "accounts.yml"
    config.write_text("accounts:\n  shop: {}\n  lab: {}\n")
    args = ("--demo", "--config.file", str(config), "--web.config.file", str(web))
    with exporter(tmp_path, *args, wait_ready=False) as proc:
        wait_until(lambda: httpx.get(f"{proc.url}/readyz").status_code == 200, timeout=20,
                   what="both demo accounts polled")  # fmt: skip
        assert httpx.get(f"{proc.url}/").status_code == 401
        page = httpx.get(f"{proc.url}/", auth=("ops", "landing-pw"))
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "<script" not in page.text
        assert not re.search(r"(src|href)=\"(https?:)?//", page.text)  # nothing from elsewhere
        for name in ("shop", "lab"):
            row = next(line for line in page.text.splitlines() if f'target={name}"' in line)
            cells = re.findall(r"<td>(.*?)</td>", row)
            assert cells[1:3] == ["yes", "25"], row
            assert re.fullmatch(r"\d+ s", cells[3]), row
            assert cells[4] == "ok", row


def test_a_reload_applies_the_web_configurations_users_and_headers(tmp_path: Path) -> None:
    def web_config(user: str, password: bytes, header: str) -> str:
        hashed = bcrypt.hashpw(password, bcrypt.gensalt(rounds=4)).decode()
        return (f"basic_auth_users:\n  {user}: '{hashed}'\n"
                f"http_server_config:\n  headers:\n    X-Frame-Options: {header}\n")  # fmt: skip

    web = tmp_path / "web.yml"
    web.write_text(web_config("first", b"first-pw", "deny"))
    web.chmod(0o600)
    with exporter(tmp_path, "--demo", "--web.config.file", str(web), wait_ready=False) as proc:
        wait_until(lambda: httpx.get(f"{proc.url}/readyz").status_code == 200, timeout=20,
                   what="the demo account polled")  # fmt: skip
        before = httpx.get(f"{proc.url}/metrics", auth=("first", "first-pw"))
        assert (before.status_code, before.headers["x-frame-options"]) == (200, "deny")
        web.write_text(web_config("second", b"second-pw", "sameorigin"))
        proc.popen.send_signal(signal.SIGHUP)
        wait_until(lambda: httpx.get(f"{proc.url}/metrics",
                                     auth=("first", "first-pw")).status_code == 401,
                   timeout=10, what="the reload to drop the first user")  # fmt: skip
        after = httpx.get(f"{proc.url}/metrics", auth=("second", "second-pw"))
        assert (after.status_code, after.headers["x-frame-options"]) == (200, "sameorigin")
        assert proc.popen.poll() is None
