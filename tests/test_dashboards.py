"""The Grafana dashboards: generated, linted, and every query run on a real Prometheus.

There is no Grafana here. Instead a real Prometheus scrapes the exporter, which polls the
simulator (the demo fleet), and evaluates the repository's rules; every panel's query then runs
with the dashboard variables filled in as Grafana would, and must return data. The same
Prometheus checks that the traffic-limit alert covers exactly the servers the simulator has
put over their limit.

A multi-account exporter, scraped at /probe per account and at /metrics, which repeats each
account's own series, is played by promtool's input series: there the panels that add up or
list per-account series must count every account once.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml

from exporter.exposition.families import EXPORTER_METRICS, SNAPSHOT_METRICS

from .processes import ROOT, Process, exporter, simulator, wait_until
from .prometheus_server import PROMTOOL, Prometheus, QueryError, prometheus

GRAFANA = ROOT / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
RULES = sorted((ROOT / "deploy/prometheus/rules").glob("*.rules.yml"))
TOKEN = "dashboards-token"
JOB = "evotic-exporter"
# A quota for every server and direction, so that the quota panels have data.
QUOTA = "5TiB"
# Grafana's $__rate_interval is at least four scrape intervals; Prometheus scrapes every
# second here, and fifteen seconds holds enough samples for a rate.
RANGE = "15s"
EXPECTED_UIDS = {
    "evotic-fleet.json": "evotic-fleet",
    "evotic-server.json": "evotic-server",
    "evotic-traffic.json": "evotic-traffic",
    "evotic-exporter.json": "evotic-exporter",
}
# The units these dashboards may use, each one Grafana knows (the dashboard-linter's list).
UNITS = {"none", "short", "percentunit", "bytes", "Bps", "reqps", "s", "dateTimeAsIso"}
# Grafana's value for a multi-value variable's All, as the generator sets it.
ALL = {"account": ".*", "job": ".+", "instance": ".+"}
# What drops the copies of per-account series that /metrics of a multi-account exporter serves:
# series with an account from a target whose up has none.
TARGET = 'job=~"$job", instance=~"$instance"'
REPEATED = (
    f'unless on (job, instance) (up{{{TARGET}, account=""}} '
    f'and on (job, instance) evotic_up{{{TARGET}, account!=""}})'
)
# The exporter's own series: no account label, one process for every account it serves.
SHARED = re.compile(r"up|scrape_\w+|process_\w+|evotic_exporter_\w+")

Json = dict[str, Any]


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grafana_generate", GRAFANA / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up while the file runs.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


GENERATOR = _load_generator()


def _committed() -> dict[str, Json]:
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(DASHBOARDS.glob("*.json"))
    }


DASHBOARD_FILES = _committed()


def _panels(dashboard: Json) -> Iterator[Json]:
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            yield panel


def _targets() -> Iterator[tuple[str, Json, Json]]:
    for name, dashboard in DASHBOARD_FILES.items():
        for panel in _panels(dashboard):
            for target in panel["targets"]:
                yield name, panel, target


ALL_TARGETS = list(_targets())


def _target_id(item: tuple[str, Json, Json]) -> str:
    name, panel, target = item
    return f"{name.removesuffix('.json')}:{panel['title']}:{target['refId']}"


# --------------------------------------------------------------------------- generated


def test_committed_dashboards_are_the_generator_output() -> None:
    generated = GENERATOR.build()
    assert set(generated) == set(DASHBOARD_FILES), "run python grafana/generate.py"
    for name, dashboard in generated.items():
        text = (DASHBOARDS / name).read_text(encoding="utf-8")
        assert text == GENERATOR.render(dashboard), f"{name}: run python grafana/generate.py"


def test_generator_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    args = ["--output", str(tmp_path)]
    assert GENERATOR.main([*args, "--check"]) == 1, "missing files are stale"
    assert not list(tmp_path.iterdir()), "--check must not write"
    assert GENERATOR.main(args) == 0
    assert GENERATOR.main([*args, "--check"]) == 0
    (tmp_path / "evotic-fleet.json").write_text("{}\n")
    assert GENERATOR.main([*args, "--check"]) == 1
    assert (tmp_path / "evotic-fleet.json").read_text() == "{}\n", "--check must not write"


# --------------------------------------------------------------------------- lint


def test_uids_titles_and_schema() -> None:
    assert {name: d["uid"] for name, d in DASHBOARD_FILES.items()} == EXPECTED_UIDS
    titles = [d["title"] for d in DASHBOARD_FILES.values()]
    assert len(set(titles)) == len(titles)
    for name, dashboard in DASHBOARD_FILES.items():
        assert dashboard["schemaVersion"] >= 39, name
        assert "evotic" in dashboard["tags"], name
        assert dashboard["editable"] is False, f"{name}: provisioned dashboards are read-only"
        assert "id" not in dashboard, f"{name}: a database id does not belong in the file"


def _datasources(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield value
            yield from _datasources(value)
    elif isinstance(node, list):
        for item in node:
            yield from _datasources(item)


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_one_datasource_variable_and_no_hard_coded_datasource(name: str) -> None:
    dashboard = DASHBOARD_FILES[name]
    variables = dashboard["templating"]["list"]
    sources = [v for v in variables if v["type"] == "datasource"]
    assert len(sources) == 1
    assert sources[0]["name"] == "datasource"
    assert sources[0]["label"] == "Data source"
    assert sources[0]["query"] == "prometheus"
    annotation_source = {"type": "grafana", "uid": "-- Grafana --"}
    for source in _datasources({k: v for k, v in dashboard.items() if k != "annotations"}):
        assert source == {"type": "prometheus", "uid": "${datasource}"}, f"{name}: {source}"
    for annotation in dashboard["annotations"]["list"]:
        assert annotation["datasource"] == annotation_source


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_account_job_and_instance_variables(name: str) -> None:
    listed = DASHBOARD_FILES[name]["templating"]["list"]
    variables = {v["name"]: v for v in listed}
    assert [v["name"] for v in listed][:4] == ["datasource", "account", "job", "instance"]
    for var, label in (("account", "Account"), ("job", "Job"), ("instance", "Instance")):
        variable = variables[var]
        assert variable["type"] == "query"
        assert variable["label"] == label
        assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert variable["multi"] is True
        assert variable["includeAll"] is True
        # A Prometheus regex matches the whole value, and a missing label is the empty value:
        # the account's All must match it, as a single-account exporter's series have none.
        assert variable["allValue"] == ALL[var]
        assert (re.fullmatch(variable["allValue"], "") is not None) == (var == "account")
        assert variable["refresh"] == 2, "reload on time range change"
    assert _query(variables["account"]) == "label_values(evotic_up, account)"
    assert _query(variables["job"]) == 'label_values(evotic_up{account=~"$account"}, job)'
    assert (
        _query(variables["instance"])
        == 'label_values(evotic_up{account=~"$account", job=~"$job"}, instance)'
    )
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["refresh"] == 2
            # The object form Grafana's Prometheus variable editor saves; 1 is label values.
            assert variable["query"]["qryType"] == 1
            assert _query(variable).startswith("label_values(")
            if variable["name"] not in ("account", "job", "instance"):
                assert TARGET + ', account=~"$account"' in _query(variable), variable["name"]


def _query(variable: Json) -> str:
    """A query variable's PromQL. Grafana's SDK writes no ``definition``, only the query."""
    query: str = variable["query"]["query"]
    return query


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACES = re.compile(r"\{[^{}]*\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(\s*)(\{\}|\()?")
_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan", "sum", "avg", "min", "max", "count", "topk", "bottomk",
    "quantile", "stddev", "stdvar", "count_values", "group",
}  # fmt: skip


def selectors(expr: str) -> list[tuple[str, str]]:
    """``(metric name, matchers)`` of every vector selector in a PromQL expression.

    A small scanner, not a parser: enough for the dashboards' own queries. A metric name
    without braces comes back with empty matchers, so that the caller flags it.
    """
    saved: list[str] = []

    def keep(match: re.Match[str]) -> str:
        saved.append(match.group())
        return f'"{len(saved) - 1}"'

    text = _STRING.sub(keep, expr)
    text = _GROUPING.sub("", re.sub(r"\[[^\]]*\]", "", text))
    blocks = [
        re.sub(r'"(\d+)"', lambda m: saved[int(m.group(1))], block)
        for block in _BRACES.findall(text)
    ]
    plain = _BRACES.sub("{}", text)
    found = []
    for match in _IDENTIFIER.finditer(plain):
        name, _, follower = match.groups()
        if follower == "(" or (name in _KEYWORDS and follower != "{}"):
            continue
        matchers = blocks[plain.count("{}", 0, match.start())] if follower == "{}" else ""
        found.append((name, matchers))
    assert plain.count("{}") == sum(1 for _, m in found if m), f"a nameless selector: {expr}"
    return found


def test_selector_scanner() -> None:
    expr = (
        'sum by (direction) (rate(a_total{job=~"$job", instance=~"$instance"}[$__rate_interval]))'
        ' / on (job) group_left () b and c{x="{y}"} or vector(0)'
    )
    assert selectors(expr) == [
        ("a_total", '{job=~"$job", instance=~"$instance"}'),
        ("b", ""),
        ("c", '{x="{y}"}'),
    ]


@pytest.mark.parametrize("item", ALL_TARGETS, ids=_target_id)
def test_every_selector_matches_account_job_and_instance(item: tuple[str, Json, Json]) -> None:
    expr = item[2]["expr"]
    found = selectors(expr.replace(REPEATED, ""))
    assert found, expr
    for name, matchers in found:
        assert 'job=~"$job"' in matchers, f"{name} in {expr}"
        assert 'instance=~"$instance"' in matchers, f"{name} in {expr}"
        # The exporter's own series stay in view whichever accounts are picked.
        account = 'account=~"$account|"' if SHARED.fullmatch(name) else 'account=~"$account"'
        assert account in matchers, f"{name} in {expr}"


def _per_account(name: str) -> bool:
    """A series the exporter serves per account, which /metrics repeats where it serves many."""
    return re.match(r"evotic[_:]", name) is not None and not re.match(
        r"evotic(_server_|:server_|_exporter_)", name
    )


def without_deduplicated(expr: str) -> str:
    """``expr`` with every ``(... REPEATED)`` span, the generator's ``once()``, cut out."""
    while (start := expr.find(REPEATED)) >= 0:
        end = start + len(REPEATED)
        assert expr[end] == ")", expr
        depth = 0
        for opening in range(start - 1, -1, -1):
            if expr[opening] == ")":
                depth += 1
            elif expr[opening] == "(":
                if depth == 0:
                    break
                depth -= 1
        else:
            raise AssertionError(f"unbalanced: {expr}")
        expr = f"{expr[:opening]}vector(0){expr[end + 1 :]}"
    return expr


def test_deduplication_scanner() -> None:
    inner = f"(rate(evotic_poll_errors_total{{{TARGET}}}[5m]) {REPEATED})"
    assert without_deduplicated(f"sum by (reason) ({inner}) + evotic_up") == (
        "sum by (reason) (vector(0)) + evotic_up"
    )


@pytest.mark.parametrize("item", ALL_TARGETS, ids=_target_id)
def test_per_account_series_are_counted_once(item: tuple[str, Json, Json]) -> None:
    """Every per-account series goes through the clause that drops the copies of /metrics."""
    expr = item[2]["expr"]
    for name, _ in selectors(without_deduplicated(expr)):
        assert not _per_account(name), f"{name} would count twice: {expr}"


@pytest.mark.parametrize("item", ALL_TARGETS, ids=_target_id)
def test_ranges_use_rate_interval_and_counters_are_rated(item: tuple[str, Json, Json]) -> None:
    expr = item[2]["expr"]
    for window in re.findall(r"\[([^\]]*)\]", expr):
        assert window == "$__rate_interval", expr
    for function in re.findall(r"\b(rate|irate|increase)\(", expr):
        assert function in ("rate", "increase"), expr
    for counter in re.finditer(r"\w+_total\{[^}]*\}", expr):
        # A counter's raw value resets at unknown times; only its rate or increase means much.
        assert expr[counter.end() : counter.end() + 1] == "[", expr
        assert re.search(r"\b(rate|increase)\($", expr[: counter.start()]), expr


@functools.cache
def _known_series() -> frozenset[str]:
    names = {m.name for m in (*SNAPSHOT_METRICS, *EXPORTER_METRICS)}
    names |= {f"{m.name}_{suffix}" for m in EXPORTER_METRICS if m.kind == "histogram"
              for suffix in ("bucket", "sum", "count")}  # fmt: skip
    recorded = {
        rule["record"]
        for path in RULES
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    # What every target has (up, scrape_*) and prometheus_client's process collector.
    scrape = {"up", "scrape_duration_seconds", "process_cpu_seconds_total",
              "process_resident_memory_bytes"}  # fmt: skip
    return frozenset(names | recorded | scrape)


@pytest.mark.parametrize("item", ALL_TARGETS, ids=_target_id)
def test_queries_use_known_series(item: tuple[str, Json, Json]) -> None:
    known = _known_series()
    for name, _ in selectors(item[2]["expr"]):
        assert name in known, f"{name} is neither exported nor recorded"


def _overlaps(a: dict[str, int], b: dict[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_panels_have_ids_layout_units_and_descriptions(name: str) -> None:
    dashboard = DASHBOARD_FILES[name]
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids)
    for n, panel in enumerate(panels):
        grid = panel["gridPos"]
        assert min(grid["w"], grid["h"], grid["x"], grid["y"]) >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for other in panels[n + 1 :]:
            assert not _overlaps(grid, other["gridPos"]), (panel["title"], other["title"])
    assert panels[0]["type"] == "row"
    for panel in _panels(dashboard):
        title = panel["title"]
        assert title
        assert panel["description"], title
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        assert panel["targets"], title
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults["unit"] in UNITS, title
        assert defaults["thresholds"]["steps"], title
        for override in panel["fieldConfig"]["overrides"]:
            for prop in override["properties"]:
                if prop["id"] == "unit":
                    assert prop["value"] in UNITS, title
        refs = [t["refId"] for t in panel["targets"]]
        assert len(set(refs)) == len(refs), title


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_table_overrides_name_real_columns(name: str) -> None:
    """Grafana calls the value column "Value" for one query and "Value #<refId>" for more."""
    for panel in _panels(DASHBOARD_FILES[name]):
        if panel["type"] != "table":
            continue
        refs = [t["refId"] for t in panel["targets"]]
        columns = ["Value"] if len(refs) == 1 else [f"Value #{ref}" for ref in refs]
        assert all(t.get("format") == "table" and t["instant"] for t in panel["targets"])
        for override in panel["fieldConfig"]["overrides"]:
            matched = override["matcher"]["options"]
            assert matched in columns or matched == "hostname", (panel["title"], matched)


def test_variables_used_in_queries_exist() -> None:
    builtin = {"__rate_interval", "__interval", "__range"}
    for name, panel, target in ALL_TARGETS:
        variables = {v["name"] for v in DASHBOARD_FILES[name]["templating"]["list"]}
        for used in re.findall(r"\$(\w+)", target["expr"]):
            assert used in variables | builtin, f"{name}: {panel['title']}: ${used}"


def test_server_dashboard_picks_one_server_by_hostname() -> None:
    variables = {v["name"]: v for v in DASHBOARD_FILES["evotic-server.json"]["templating"]["list"]}
    hostname = variables["hostname"]
    assert hostname["multi"] is False
    assert hostname["includeAll"] is False
    for name, panel, target in ALL_TARGETS:
        if name == "evotic-server.json":
            for metric, matchers in selectors(target["expr"]):
                assert 'hostname="$hostname"' in matchers, (panel["title"], metric)


# --------------------------------------------------------------------------- provisioning


def test_provisioning_datasource_and_dashboard_provider() -> None:
    sources = yaml.safe_load(
        (GRAFANA / "provisioning/datasources/prometheus.yml").read_text(encoding="utf-8")
    )
    assert sources["apiVersion"] == 1
    [source] = sources["datasources"]
    assert source["type"] == "prometheus"
    assert source["access"] == "proxy"
    assert source["url"].startswith("http")
    assert source["isDefault"] is True
    # $__rate_interval is built from it; it must be the scrape interval of the stack.
    assert re.fullmatch(r"\d+[smh]", source["jsonData"]["timeInterval"])

    providers = yaml.safe_load(
        (GRAFANA / "provisioning/dashboards/evotic.yml").read_text(encoding="utf-8")
    )
    assert providers["apiVersion"] == 1
    [provider] = providers["providers"]
    assert provider["type"] == "file"
    assert provider["allowUiUpdates"] is False
    assert provider["options"]["path"].startswith("/")


# --------------------------------------------------------------------------- on Prometheus


@dataclass
class Stack:
    """The simulator, an exporter polling it, and a Prometheus scraping the exporter."""

    simulator: Process
    exporter: Process
    prometheus: Prometheus
    target: str

    def state(self) -> Json:
        return httpx.get(f"{self.simulator.url}/_simulator/state", timeout=10).json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("dashboards")
    with ExitStack() as stack:
        sim = stack.enter_context(simulator(tmp_path, token=TOKEN))
        args = ["--api.url", f"{sim.url}/api/v1", "--poll.interval", "1",
                "--traffic.quota-bytes", QUOTA]  # fmt: skip
        exp = stack.enter_context(exporter(tmp_path, *args, env={"EVOTIC_API_TOKEN": TOKEN}))
        target = exp.url.removeprefix("http://")
        prom = stack.enter_context(prometheus(tmp_path, [target], RULES, job=JOB))
        ready = Stack(sim, exp, prom, target)
        # Rates need two scrapes; the forecast needs a rate and a rule evaluation after it.
        wait_until(
            lambda: prom.query(f"rate(evotic_server_traffic_bytes_total[{RANGE}])")
            and prom.query("evotic:server_traffic_bytes:forecast_period_end")
            and prom.query(f"rate(evotic_api_requests_total[{RANGE}])"),
            timeout=45, interval=0.5, what=f"data in prometheus:\n{prom.output()}",
        )  # fmt: skip
        yield ready


def _regex_escape(value: str) -> str:
    """A value as Grafana puts a multi-value variable into a regex matcher."""
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", value)


def _hostname(state: Json) -> str:
    """A running server's hostname; one with non-ASCII letters if the fleet has one."""
    running: list[str] = [s["hostname"] for s in state["servers"]
                          if s["status"] == "started" and not s["usage_null"]]  # fmt: skip
    unusual = [h for h in running if not h.isascii()]
    return (unusual or running)[0]


def substitute(expr: str, values: dict[str, str]) -> str:
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(f"${name}", values[name])
    assert "$" not in expr, f"a variable is left in {expr}"
    return expr


@pytest.fixture(scope="module")
def variable_values(stack: Stack) -> dict[str, str]:
    hostname = _hostname(stack.state())
    return {
        # The exporter serves one account and no account label: All is the only choice.
        "account": ALL["account"],
        "job": _regex_escape(JOB),
        "instance": _regex_escape(stack.target),
        "hostname": hostname.replace("\\", "\\\\").replace('"', '\\"'),
        "__rate_interval": RANGE,
    }


@pytest.mark.e2e
@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_variable_queries_list_the_fleet(name: str, stack: Stack) -> None:
    state = stack.state()
    values = {
        "account": ALL["account"],
        "job": _regex_escape(JOB),
        "instance": _regex_escape(stack.target),
    }
    expected = {
        # A single-account exporter has no account label: the list is empty, and All matches.
        "account": set(),
        "job": {JOB},
        "instance": {stack.target},
        "hostname": {s["hostname"] for s in state["servers"]},
    }
    for variable in DASHBOARD_FILES[name]["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", _query(variable))
        assert match, _query(variable)
        selector, label = match.groups()
        series = stack.prometheus.series_labels(substitute(selector, values))
        assert series, selector
        found = {s[label] for s in series if label in s}
        assert found == expected[variable["name"]], variable["name"]


@pytest.mark.e2e
def test_every_panel_query_returns_data(stack: Stack, variable_values: dict[str, str]) -> None:
    problems = []
    for name, panel, target in ALL_TARGETS:
        expr = substitute(target["expr"], variable_values)
        where = f"{name} / {panel['title']} / {target['refId']}: {expr}"
        try:
            if target["instant"]:
                result = stack.prometheus.query(expr)
            else:
                result = stack.prometheus.query_range(expr, seconds=30, step=2)
        except QueryError as error:
            problems.append(f"{where}\n    error: {error}")
            continue
        if not result:
            problems.append(f"{where}\n    no data")
    assert not problems, "\n".join(problems)
    assert len(ALL_TARGETS) > 40


def _expr(name: str, title: str, ref: str = "A") -> str:
    """The query of target ``ref`` of the one panel titled ``title`` in dashboard ``name``."""
    [expr] = [target["expr"] for file, panel, target in ALL_TARGETS
              if file == name and panel["title"] == title and target["refId"] == ref]  # fmt: skip
    return str(expr)


@pytest.mark.e2e
def test_per_account_panels_give_the_exporters_own_numbers(
    stack: Stack, variable_values: dict[str, str]
) -> None:
    """With one account and nothing repeated, dropping copies changes no number."""
    raw = {
        ("evotic-fleet.json", "Servers"): "sum(evotic_servers)",
        ("evotic-fleet.json", "API polls"): "min(evotic_up)",
        ("evotic-exporter.json", "API requests by status code"):
            f"sum by (endpoint, code) (rate(evotic_api_requests_total[{RANGE}]))",
    }  # fmt: skip
    for (name, title), expr in raw.items():
        panel = substitute(_expr(name, title), variable_values)
        expected = stack.prometheus.query(expr)
        assert expected, expr
        # One query, so that both sides see the same samples.
        differences = stack.prometheus.query(f"({panel}) - ({expr})")
        assert len(differences) == len(expected), title
        assert all(float(d["value"][1]) == 0 for d in differences), (title, differences)
    [polls] = stack.prometheus.query(substitute(_expr("evotic-exporter.json", "API polls"),
                                                variable_values))  # fmt: skip
    # The legend's label: the instance, and nothing to show after it but a space.
    assert polls["metric"]["source"] == f"{stack.target} "


# A multi-account exporter as Prometheus sees it: acme and globex from their /probe targets
# (job evotic, the target label account on every series, up included), and /metrics (job
# evotic-exporter, an up without account) with the process, the build info and a copy of
# every account's own series. Sample values per minute, in promtool's notation.
PROBE = 'job="evotic", instance="exporter:19875"'
METRICS = 'job="evotic-exporter", instance="exporter:19875"'
PER_ACCOUNT = {
    "evotic_up": {"acme": "0x10", "globex": "1x10"},
    "evotic_servers": {"acme": "3x10", "globex": "5x10"},
    'evotic_poll_errors_total{reason="timeout"}': {"acme": "0+1x10", "globex": "0+2x10"},
    "evotic_last_successful_poll_timestamp_seconds": {"acme": "0x10", "globex": "0+60x10"},
}
PER_SERVER = {
    'evotic_server_traffic_bytes_total{server_id="7", hostname="web-01", direction="outgoing"}':
        {"acme": "100x10", "globex": "200x10"},
    'evotic_server_traffic_limit_exceeded{server_id="7", hostname="web-01", direction="outgoing"}':
        {"acme": "1x10", "globex": "1x10"},
}  # fmt: skip


def _series(selector: str, labels: str) -> str:
    """``selector`` with ``labels`` added to its own."""
    name, _, own = selector.partition("{")
    return f"{name}{{{labels}{', ' + own.rstrip('}') if own else ''}}}"


def _multi_account_input() -> list[Json]:
    series = [{"series": _series("up", METRICS), "values": "1x10"},
              {"series": _series("process_resident_memory_bytes", METRICS), "values": "5e7x10"},
              {"series": _series('evotic_exporter_build_info{version="1.0.0"}', METRICS),
               "values": "1x10"}]  # fmt: skip
    for account in ("acme", "globex"):
        probe = f'{PROBE}, account="{account}"'
        series.append({"series": _series("up", probe), "values": "1x10"})
        for selector, values in PER_ACCOUNT.items():
            series.append({"series": _series(selector, probe), "values": values[account]})
            copy = f'{METRICS}, account="{account}"'
            series.append({"series": _series(selector, copy), "values": values[account]})
        for selector, values in PER_SERVER.items():
            series.append({"series": _series(selector, probe), "values": values[account]})
    return series


def _single_account_input() -> list[Json]:
    return [{"series": _series(name, METRICS), "values": values}
            for name, values in (("up", "1x10"), ("evotic_up", "1x10"),
                                 ("evotic_servers", "4x10"))]  # fmt: skip


# (dashboard, panel title, the account variable's value, the samples expected at 10 minutes).
# Counting the /metrics copies too would double every sum here.
MULTI_ACCOUNT_PANELS = [
    ("evotic-fleet.json", "Servers", ".*", {"{}": 8}),
    ("evotic-fleet.json", "Servers", "acme", {"{}": 3}),
    ("evotic-fleet.json", "API polls", ".*", {"{}": 0}),
    ("evotic-fleet.json", "API polls", "globex", {"{}": 1}),
    ("evotic-fleet.json", "Servers over their traffic limit", ".*", {"{}": 2}),
    ("evotic-fleet.json", "Traffic this billing period", ".*", {'{direction="outgoing"}': 300}),
    ("evotic-exporter.json", "Failed polls by reason", ".*", {'{reason="timeout"}': 15}),
    ("evotic-exporter.json", "Failed polls by reason", "globex", {'{reason="timeout"}': 10}),
    ("evotic-exporter.json", "API polls", ".*", {
        f'evotic_up{{{PROBE}, account="acme", source="exporter:19875 acme"}}': 0,
        f'evotic_up{{{PROBE}, account="globex", source="exporter:19875 globex"}}': 1,
    }),
    ("evotic-exporter.json", "Scrapes", "acme", {
        f'up{{{PROBE}, account="acme", source="exporter:19875 acme"}}': 1,
        f'up{{{METRICS}, source="exporter:19875 "}}': 1,
    }),
    # The exporter's own series stay whichever account is picked.
    ("evotic-exporter.json", "Version", "acme",
     {f'evotic_exporter_build_info{{{METRICS}, version="1.0.0"}}': 1}),
    ("evotic-exporter.json", "Memory", "globex",
     {f'process_resident_memory_bytes{{{METRICS}}}': 5e7}),
]  # fmt: skip
SINGLE_ACCOUNT_PANELS = [
    ("evotic-fleet.json", "Servers", ".*", {"{}": 4}),
    ("evotic-exporter.json", "API polls", ".*",
     {f'evotic_up{{{METRICS}, source="exporter:19875 "}}': 1}),
]  # fmt: skip


def _expr_tests(panels: list[tuple[str, str, str, dict[str, float]]]) -> list[Json]:
    tests = []
    for name, title, account, samples in panels:
        values = {**ALL, "account": account, "__rate_interval": "5m"}
        tests.append({
            "expr": substitute(_expr(name, title), values),
            "eval_time": "10m",
            "exp_samples": [{"labels": key, "value": value} for key, value in samples.items()],
        })  # fmt: skip
    return tests


@pytest.mark.e2e
def test_panels_count_each_account_once_where_metrics_repeats_them(tmp_path: Path) -> None:
    """promtool runs the panels' queries over a multi-account exporter's series."""
    document = {
        "rule_files": [str(path) for path in RULES],
        "evaluation_interval": "1m",
        "tests": [
            {"name": "two accounts", "interval": "1m", "input_series": _multi_account_input(),
             "promql_expr_test": _expr_tests(MULTI_ACCOUNT_PANELS)},
            {"name": "one account", "interval": "1m", "input_series": _single_account_input(),
             "promql_expr_test": _expr_tests(SINGLE_ACCOUNT_PANELS)},
        ],
    }  # fmt: skip
    path = tmp_path / "panels.test.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    result = subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.e2e
def test_rules_evaluate_without_errors(stack: Stack) -> None:
    def evaluated() -> bool:
        return all(not r["lastEvaluation"].startswith("0001") for r in stack.prometheus.rules())

    wait_until(evaluated, what="every rule to be evaluated")
    rules = stack.prometheus.rules()
    assert len(rules) >= 20
    broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not broken


def _active(prom: Prometheus) -> set[tuple[str, str]]:
    # Pending counts: the alert waits 5 minutes before it fires, and this test checks which
    # series its expression selects. The waiting itself is the promtool unit tests' business.
    found = prom.query(
        'ALERTS{alertname="EvoticTrafficLimitExceeded", alertstate=~"pending|firing"}'
    )
    return {(a["metric"]["server_id"], a["metric"]["direction"]) for a in found}


def _exceeded(state: Json) -> set[tuple[str, str]]:
    return {
        (str(server["id"]), direction)
        for server in state["servers"]
        if not server["usage_null"]
        for direction, flow in server["traffic"].items()
        if flow["is_exceeded"]
    }


@pytest.mark.e2e
def test_traffic_limit_alert_covers_exactly_the_exceeded_servers(stack: Stack) -> None:
    prom = stack.prometheus
    seen: dict[str, set[tuple[str, str]]] = {}

    def agree() -> bool:
        seen["alerts"], seen["simulator"] = _active(prom), _exceeded(stack.state())
        return seen["alerts"] == seen["simulator"]

    def until(condition: Callable[[], bool], what: str) -> None:
        try:
            wait_until(condition, timeout=30, interval=0.5, what=what)
        except AssertionError as error:
            raise AssertionError(f"{error}; alerts: {seen.get('alerts')}, "
                                 f"simulator: {seen.get('simulator')}") from None  # fmt: skip

    until(agree, "the alerts to match the simulator")
    assert seen["simulator"], "the demo fleet should have servers over their limit"

    # Put one more server over its limit; the alert must follow, and leave when it is undone.
    state = stack.state()
    server = next(
        s for s in state["servers"]
        if s["status"] == "started" and not s["usage_null"]
        and not s["traffic"]["incoming"]["is_exceeded"]
    )  # fmt: skip
    limit = server["traffic"]["incoming"]["limit_bytes"]
    change = f"{stack.simulator.url}/_simulator/servers/{server['id']}"
    key = (str(server["id"]), "incoming")
    try:
        httpx.patch(change, json={"traffic": {"incoming": {"limit_bytes": 1}}}).raise_for_status()
        until(lambda: agree() and key in seen["alerts"], f"an alert for {key}")
    finally:
        patch = {"traffic": {"incoming": {"limit_bytes": limit}}}
        httpx.patch(change, json=patch).raise_for_status()
    until(lambda: agree() and key not in seen["alerts"], f"the alert for {key} to end")


# --------------------------------------------------------------------------- two accounts

MULTI_TOKENS = {"prod": "dashboards-prod-token", "staging": "dashboards-staging-token"}


@dataclass
class MultiStack:
    """Two simulated accounts in one exporter, scraped as README "Several accounts" says."""

    simulators: dict[str, Process]
    exporter: Process
    prometheus: Prometheus
    target: str


@pytest.fixture(scope="module")
def multi_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MultiStack]:
    tmp_path = tmp_path_factory.mktemp("dashboards-multi")
    with ExitStack() as stack:
        sims: dict[str, Process] = {}
        accounts = {}
        for seed, (name, token) in enumerate(MULTI_TOKENS.items(), start=31):
            sims[name] = stack.enter_context(simulator(tmp_path, "--seed", str(seed),
                                                       token=token))  # fmt: skip
            token_file = tmp_path / f"{name}.token"
            token_file.write_text(token)
            token_file.chmod(0o600)
            accounts[name] = {"token_file": str(token_file), "poll_interval": 1,
                              "api_url": f"{sims[name].url}/api/v1"}  # fmt: skip
        config = tmp_path / "accounts.yml"
        config.write_text(yaml.safe_dump({"accounts": accounts}))
        exp = stack.enter_context(exporter(tmp_path, "--config.file", str(config),
                                           "--traffic.quota-bytes", QUOTA))  # fmt: skip
        target = exp.url.removeprefix("http://")
        jobs = [
            {"job_name": JOB, "static_configs": [{"targets": [target]}]},
            {"job_name": "evotic", "metrics_path": "/probe",
             "static_configs": [{"targets": list(MULTI_TOKENS)}],
             "relabel_configs": [
                 {"source_labels": ["__address__"], "target_label": "__param_target"},
                 {"source_labels": ["__param_target"], "target_label": "account"},
                 {"target_label": "__address__", "replacement": target}]},
        ]  # fmt: skip
        prom = stack.enter_context(prometheus(tmp_path, [], RULES, scrape_configs=jobs))
        wait_until(
            lambda: len(prom.query(f"rate(evotic_server_traffic_bytes_total[{RANGE}])")) > 0
            and len(prom.query("evotic:server_traffic_bytes:forecast_period_end")) > 0
            and {r["metric"].get("account") for r in prom.query(
                f'rate(evotic_api_requests_total{{job="evotic"}}[{RANGE}])')} == set(MULTI_TOKENS)
            # The /metrics job is scraped on its own schedule: its rates too.
            and len(prom.query(f'rate(process_cpu_seconds_total{{job="{JOB}"}}[{RANGE}])')) > 0
            and {r["metric"].get("account") for r in prom.query(
                f'rate(evotic_api_requests_total{{job="{JOB}"}}[{RANGE}])')} == set(MULTI_TOKENS),
            timeout=60, interval=0.5, what=f"data in prometheus:\n{prom.output()}",
        )  # fmt: skip
        yield MultiStack(sims, exp, prom, target)


@pytest.mark.e2e
def test_the_account_selector_lists_both_accounts_and_every_panel_has_data_for_one(
    multi_stack: MultiStack,
) -> None:
    prom = multi_stack.prometheus
    for dashboard in DASHBOARD_FILES.values():
        [account] = [v for v in dashboard["templating"]["list"] if v["name"] == "account"]
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", _query(account))
        assert match, _query(account)
        selector = substitute(match.group(1), {"job": ".+", "instance": ".+"})
        assert {s.get("account") for s in prom.series_labels(selector)} >= set(MULTI_TOKENS)
    state = httpx.get(f"{multi_stack.simulators['prod'].url}/_simulator/state").json()
    problems = []
    for name, panel, target in ALL_TARGETS:
        values = {
            "account": "prod",
            "job": ALL["job"],
            "instance": _regex_escape(multi_stack.target),
            "hostname": _hostname(state).replace("\\", "\\\\").replace('"', '\\"'),
            "__rate_interval": RANGE,
        }
        expr = substitute(target["expr"], values)
        where = f"{name} / {panel['title']} / {target['refId']}: {expr}"
        try:
            if target["instant"]:
                result = prom.query(expr)
            else:
                result = prom.query_range(expr, seconds=30, step=2)
        except QueryError as error:
            problems.append(f"{where}\n    error: {error}")
            continue
        if not result:
            problems.append(f"{where}\n    no data")
            continue
        accounts = {series["metric"].get("account") for series in result} - {None}
        if accounts - {"prod"}:
            problems.append(f"{where}\n    other accounts: {accounts}")
    assert not problems, "\n".join(problems)
