"""Several accounts in one exporter, in process: ``/probe``, ``/metrics`` with an ``account``
label, readiness across accounts, reloads that add, keep, replace and remove accounts.

Each account polls a simulated API of its own (its own fleet and token) through
``httpx.ASGITransport``; polls are driven by hand and nothing opens a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import bcrypt
import httpx
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from exporter.api.client import EvoticClient
from exporter.api.network import ApiRoute, tls_context
from exporter.api.token import TokenSource
from exporter.exposition.own_metrics import AccountMetrics, ReloadMetrics
from exporter.polling.poller import PollSettings
from exporter.runtime.logs import Redactor
from exporter.service.account import Account
from exporter.service.reload import Files, LoadFailed, Reloader
from exporter.service.roster import Roster
from exporter.settings.accounts import AccountConfig
from exporter.settings.model import Settings
from exporter.settings.quotas import Quotas, load_quotas
from exporter.web.app import ExporterApp
from exporter.web.config import BasicAuth, WebConfig
from simulator import FaultSet, Fleet, SimulatorApp

T0 = 1_717_243_200.0
PLAIN = {"Accept-Encoding": "identity"}
ROUTE = ApiRoute(tls_context(None))
SEEDS = {"prod": 11, "staging": 12, "lab": 13}


def config(name: str, quotas: Quotas | None = None, **settings: Any) -> AccountConfig:
    return AccountConfig(name, Settings(demo=True, **settings), quotas or Quotas({}), ROUTE)


async def _no_wait(seconds: float) -> None:
    return None


@dataclass
class World:
    """The simulated APIs by account name, and every account ever started."""

    fleets: dict[str, Fleet] = field(default_factory=dict)
    faults: dict[str, FaultSet] = field(default_factory=dict)
    started: list[Account] = field(default_factory=list)

    async def start(self, config: AccountConfig, stack: contextlib.AsyncExitStack) -> Account:
        name = config.name
        fleet = self.fleets.setdefault(name, Fleet(lambda: T0, servers=3, seed=SEEDS[name]))
        faults = self.faults.setdefault(name, FaultSet())
        token = f"token-of-{name}"
        simulator = SimulatorApp(fleet, faults, token)
        source = TokenSource(Redactor(), token=token)
        metrics = AccountMetrics()
        client = EvoticClient(f"http://{name}/api/v1", source, timeout=5, user_agent="test",
                              observe=metrics.request, transport=httpx.ASGITransport(app=simulator),
                              sleep=_no_wait)  # fmt: skip
        settings = PollSettings.from_settings(config.settings)
        account = Account(client, source, settings, metrics, quotas=config.quotas,
                          clock=lambda: T0)  # fmt: skip
        # Polls are driven by hand: the account's loops are not started.
        account.start = lambda: None  # type: ignore[method-assign]
        self.started.append(account)
        return account


@dataclass
class Multi:
    world: World
    accounts: Roster
    app: ExporterApp
    http: httpx.AsyncClient

    async def poll(self, *names: str) -> None:
        for name in names or tuple(self.accounts.current):
            await self.accounts.current[name].poller.poll_once()

    async def get(self, path: str, **headers: str) -> httpx.Response:
        return await self.http.get(path, headers={**PLAIN, **headers})


@asynccontextmanager
async def multi(
    *names: str,
    reload: Any = None,
    auth: BasicAuth | None = None,
    multi_mode: bool = True,
) -> AsyncIterator[Multi]:
    world = World()
    accounts = Roster(world.start)
    await accounts.apply({name: config(name) for name in names})
    app = ExporterApp(lambda: accounts.current, CollectorRegistry(), version="1.0-test",
                      multi=multi_mode, reload=reload, auth=auth)  # fmt: skip
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://exporter") as http:  # fmt: skip
        try:
            yield Multi(world, accounts, app, http)
        finally:
            await accounts.stop()


def run(scenario: Any) -> None:
    asyncio.run(scenario())


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text)
            for s in family.samples]  # fmt: skip


def served_hostnames(found: list[tuple[str, dict[str, str], float]]) -> set[str]:
    return {labels["hostname"] for name, labels, _ in found if name == "evotic_server_info"}


def hostnames(fleet: Fleet) -> set[str]:
    return {str(server["hostname"]) for server in fleet.listing()}


def test_each_probe_serves_its_own_account_without_an_account_label() -> None:
    async def scenario() -> None:
        async with multi("prod", "staging") as m:
            await m.poll()
            for name in ("prod", "staging"):
                response = await m.get(f"/probe?target={name}")
                assert response.status_code == 200
                found = samples(response.text)
                assert served_hostnames(found) == hostnames(m.world.fleets[name])
                assert ("evotic_up", {}, 1.0) in found
                assert not any("account" in labels for _, labels, _ in found)
                assert not any(metric.startswith("process_") for metric, _, _ in found)
            prod = hostnames(m.world.fleets["prod"])
            assert prod.isdisjoint(hostnames(m.world.fleets["staging"]))

    run(scenario)


def test_metrics_watches_every_account_with_its_label_and_no_server_series() -> None:
    async def scenario() -> None:
        async with multi("prod", "staging") as m:
            await m.poll("prod")
            found = samples((await m.get("/metrics")).text)
            up = {labels["account"]: value for name, labels, value in found if name == "evotic_up"}
            assert up == {"prod": 1.0, "staging": 0.0}
            servers = {labels["account"]: value for name, labels, value in found
                       if name == "evotic_servers"}  # fmt: skip
            assert servers == {"prod": 3.0, "staging": 0.0}
            assert not any(name.startswith("evotic_server_") for name, _, _ in found)

    run(scenario)


def test_one_failing_account_leaves_the_other_fresh() -> None:
    async def scenario() -> None:
        async with multi("prod", "staging") as m:
            await m.poll()
            m.world.faults["staging"].add("server_error", scope="servers", status=500)
            await m.poll()
            prod = samples((await m.get("/probe?target=prod")).text)
            staging = samples((await m.get("/probe?target=staging")).text)
            assert ("evotic_up", {}, 1.0) in prod
            assert ("evotic_up", {}, 0.0) in staging
            errors = {labels["reason"]: value for name, labels, value in staging
                      if name == "evotic_poll_errors_total"}  # fmt: skip
            assert errors["server_error"] >= 1

    run(scenario)


def test_an_account_whose_api_hangs_holds_up_no_other_account_nor_any_scrape() -> None:
    async def scenario() -> None:
        async with multi("prod", "staging") as m:
            await m.poll()
            m.world.faults["staging"].add("latency", "servers", delay=600)
            hung = asyncio.create_task(m.poll("staging"))
            for _ in range(20):  # the hung poll is inside its request
                await asyncio.sleep(0)
            renamed = m.world.fleets["prod"].ids()[0]
            m.world.fleets["prod"].rename_server(renamed, "renamed-while-staging-hangs")
            await asyncio.wait_for(m.poll("prod"), timeout=10)
            prod = samples((await m.get("/probe?target=prod")).text)
            staging = samples((await m.get("/probe?target=staging")).text)
            assert not hung.done()
            assert "renamed-while-staging-hangs" in served_hostnames(prod)
            # The hung account serves its last good poll meanwhile.
            assert ("evotic_up", {}, 1.0) in staging
            assert served_hostnames(staging) == hostnames(m.world.fleets["staging"])
            assert (await m.get("/metrics")).status_code == 200
            hung.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await hung

    run(scenario)


def test_probe_refuses_a_missing_unknown_or_repeated_target_in_one_line() -> None:
    async def scenario() -> None:
        async with multi("prod") as m:
            missing = await m.get("/probe")
            assert (missing.status_code, missing.text) == (
                400, "missing parameter: ask for /probe?target=ACCOUNT\n")  # fmt: skip
            assert (await m.get("/probe?target=")).status_code == 400
            twice = await m.get("/probe?target=prod&target=prod")
            assert twice.status_code == 400
            hostile = "https://attacker.example/?token=secret-value"
            unknown = await m.http.get("/probe", params={"target": hostile})
            assert unknown.status_code == 404
            assert unknown.text == "no account of that name (the accounts: prod)\n"
            assert "attacker" not in unknown.text

    run(scenario)


def test_readyz_is_ready_only_when_every_account_is_and_names_each_state() -> None:
    async def scenario() -> None:
        async with multi("prod", "staging") as m:
            await m.poll("prod")
            waiting = await m.get("/readyz")
            assert waiting.status_code == 503
            lines = waiting.text.splitlines()
            assert [line.split(":")[0] for line in lines] == ["prod", "staging"]
            await m.poll("staging")
            assert (await m.get("/readyz")).status_code == 200

    run(scenario)


def test_landing_page_links_each_account_probe() -> None:
    async def scenario() -> None:
        async with multi("prod", "staging") as m:
            page = (await m.get("/")).text
            assert 'href="probe?target=prod"' in page
            assert 'href="probe?target=staging"' in page

    run(scenario)


def test_single_account_mode_still_serves_default_on_metrics_and_on_probe() -> None:
    async def scenario() -> None:
        async with multi("prod", multi_mode=False) as m:
            # Without a configuration file the one account is named "default".
            await m.accounts.apply({"default": config("default")})
            await m.poll()
            assert "evotic_server_info" in (await m.get("/metrics")).text
            probe = (await m.get("/probe?target=default")).text
            assert "evotic_server_info" in probe

    SEEDS["default"] = 1
    run(scenario)


def test_reload_keeps_unchanged_accounts_and_their_data_and_replaces_changed_ones() -> None:
    async def scenario() -> None:
        async with multi("prod", "staging") as m:
            await m.poll()
            prod, staging = m.accounts.current["prod"], m.accounts.current["staging"]
            quota = load_quotas(2**40, None)
            changes = await m.accounts.apply({
                "prod": config("prod", quotas=quota),
                "staging": config("staging", poll_interval=30.0),
                "lab": config("lab"),
            })  # fmt: skip
            assert (changes.kept, changes.replaced, changes.added) == (
                ("prod",), ("staging",), ("lab",))  # fmt: skip
            assert m.accounts.current["prod"] is prod  # same poller, same last snapshot
            assert m.accounts.current["staging"] is not staging
            assert not staging.alive()
            kept = samples((await m.get("/probe?target=prod")).text)
            assert ("evotic_up", {}, 1.0) in kept
            # The quotas read again apply from the next poll on.
            await m.poll("prod")
            quotas = [v for n, _, v in samples((await m.get("/probe?target=prod")).text)
                      if n == "evotic_server_traffic_quota_bytes"]  # fmt: skip
            assert len(quotas) == 6  # 3 servers, 2 directions
            assert set(quotas) == {2**40}

            changes = await m.accounts.apply({"lab": config("lab")})
            assert set(changes.removed) == {"prod", "staging"}
            gone = await m.get("/probe?target=prod")
            assert gone.status_code == 404
            labels = {labels.get("account") for _, labels, _ in
                      samples((await m.get("/metrics")).text)}  # fmt: skip
            assert labels == {"lab"}

    run(scenario)


def test_a_reload_that_cannot_read_its_files_changes_nothing() -> None:
    async def scenario() -> None:
        registry = CollectorRegistry()
        now = [T0]
        reloads = ReloadMetrics(registry, lambda: now[0])
        reloads.loaded(True)
        world = World()
        accounts = Roster(world.start)
        await accounts.apply({"prod": config("prod")})
        webs: list[WebConfig] = []
        answers: list[Files | LoadFailed] = [LoadFailed("invalid setting X: broken")]

        def read() -> Files:
            answer = answers.pop(0)
            if isinstance(answer, LoadFailed):
                raise answer
            return answer

        async def use_web(web: WebConfig) -> None:
            webs.append(web)

        reloader = Reloader(read, accounts, use_web, reloads)
        before = dict(accounts.current)
        now[0] = T0 + 60
        assert await reloader.reload() == "invalid setting X: broken"
        assert dict(accounts.current) == before
        assert webs == []
        assert registry.get_sample_value("evotic_config_last_reload_successful") == 0.0
        assert registry.get_sample_value(
            "evotic_config_last_reload_success_timestamp_seconds") == T0  # fmt: skip

        answers.append(Files({"staging": config("staging")}, WebConfig()))
        now[0] = T0 + 120
        assert await reloader.reload() is None
        assert list(accounts.current) == ["staging"]
        assert webs == [WebConfig()]
        assert registry.get_sample_value("evotic_config_last_reload_successful") == 1.0
        assert registry.get_sample_value(
            "evotic_config_last_reload_success_timestamp_seconds") == T0 + 120  # fmt: skip
        await accounts.stop()

    run(scenario)


def test_lifecycle_reload_endpoint() -> None:
    outcomes: list[str | None] = [None, "invalid setting EVOTIC_CONFIG_FILE: broken"]

    async def reload() -> str | None:
        return outcomes.pop(0)

    async def scenario() -> None:
        async with multi("prod") as off:
            refused = await off.http.post("/-/reload")
            assert refused.status_code == 403
            assert "--web.enable-lifecycle" in refused.text
        async with multi("prod", reload=reload) as on:
            assert (await on.http.post("/-/reload")).text == "reloaded\n"
            failed = await on.http.post("/-/reload")
            assert (failed.status_code, failed.text) == (
                500, "reload failed: invalid setting EVOTIC_CONFIG_FILE: broken\n")  # fmt: skip
            wrong = await on.http.get("/-/reload")
            assert (wrong.status_code, wrong.headers["allow"]) == (405, "POST, PUT")
            assert (await on.http.post("/metrics")).status_code == 405

    run(scenario)


def test_basic_auth_guards_probe_and_reload() -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4))
    auth = BasicAuth({"ops": hashed})

    async def reload() -> str | None:
        return None

    async def scenario() -> None:
        async with multi("prod", auth=auth, reload=reload) as m:
            assert (await m.get("/probe?target=prod")).status_code == 401
            assert (await m.http.post("/-/reload")).status_code == 401
            good = await m.http.get("/probe?target=prod", auth=("ops", "s3cret"))
            assert good.status_code == 200
            assert (await m.http.post("/-/reload", auth=("ops", "s3cret"))).status_code == 200
            assert (await m.get("/readyz")).status_code in (200, 503)  # open for probes

    run(scenario)


def test_probe_negotiates_formats_and_gzip_as_metrics_does() -> None:
    async def scenario() -> None:
        async with multi("prod") as m:
            await m.poll()
            plain = await m.get("/probe?target=prod")
            om = await m.get("/probe?target=prod", Accept="application/openmetrics-text")
            assert om.headers["content-type"].startswith("application/openmetrics-text")
            assert om.text.endswith("# EOF\n")
            assert om.text.count("# EOF") == 1
            zipped = await m.http.get("/probe?target=prod", headers={"Accept-Encoding": "gzip"})
            assert zipped.headers["content-encoding"] == "gzip"
            assert zipped.text == plain.text  # httpx decompresses
            head = await m.http.head("/probe?target=prod", headers=PLAIN)
            assert head.content == b""
            assert int(head.headers["content-length"]) == len(plain.content)
            # /metrics of several accounts has no per-server part: gzip and OpenMetrics still work.
            both = {"Accept-Encoding": "gzip", "Accept": "application/openmetrics-text"}
            whole = await m.http.get("/metrics", headers=both)
            assert whole.headers["content-encoding"] == "gzip"
            assert whole.text.endswith("# EOF\n")
            assert 'evotic_up{account="prod"} 1.0' in whole.text

    run(scenario)


def test_poll_on_demand_needs_the_lifecycle_api_and_names_what_it_polls() -> None:
    async def reload() -> str | None:
        return None

    async def scenario() -> None:
        async with multi("prod") as off:
            assert (await off.http.post("/-/poll")).status_code == 403
        async with multi("prod", "staging", reload=reload) as on:
            woken: list[str] = []
            for name, account in on.accounts.current.items():
                account.poll_now = lambda name=name: woken.append(name)  # type: ignore[method-assign]
            answer = await on.http.post("/-/poll")
            assert (answer.status_code, answer.text) == (202, "polling prod, staging\n")
            one = await on.http.post("/-/poll?target=staging")
            assert one.text == "polling staging\n"
            assert woken == ["prod", "staging", "staging"]
            assert (await on.http.post("/-/poll?target=nope")).status_code == 404
            assert (await on.http.get("/-/poll")).status_code == 405

    run(scenario)


def test_landing_page_says_how_each_account_is() -> None:
    async def scenario() -> None:
        async with multi("prod", "staging") as m:
            await m.poll("prod")
            m.world.faults["staging"].add("unauthorized", scope="servers")
            await m.poll("staging")
            page = (await m.get("/")).text
            assert "<script" not in page
            assert "http://" not in page
            assert "https://" not in page
            rows = {row.split('target=')[1].split('"')[0]: row
                    for row in page.splitlines() if row.startswith("<tr><td><a")}  # fmt: skip
            assert set(rows) == {"prod", "staging"}
            assert "<td>yes</td><td>3</td><td>0 s</td><td>ok</td>" in rows["prod"]
            assert "<td>not stated by the API</td>" in rows["prod"]
            assert "<td>no: no successful poll yet (last error: auth)</td>" in rows["staging"]
            assert "<td>failed: auth</td>" in rows["staging"]

    run(scenario)


def test_metrics_of_several_accounts_has_each_accounts_billing_period() -> None:
    async def scenario() -> None:
        async with multi("prod", "staging") as m:
            await m.poll("prod")
            found = samples((await m.get("/metrics")).text)
            period = {labels["account"]: value for name, labels, value in found
                      if name == "evotic_traffic_period_end_timestamp_seconds"}  # fmt: skip
            probe = samples((await m.get("/probe?target=prod")).text)
            [end] = [v for n, _, v in probe if n == "evotic_traffic_period_end_timestamp_seconds"]
            assert period == {"prod": end}  # staging has no data served yet

    run(scenario)
