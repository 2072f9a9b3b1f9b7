"""The Prometheus rules under deploy/prometheus/rules/: promtool's checks and unit tests, and
the conventions that promtool does not know about.

Every ``*.rules.yml`` file is what Prometheus loads; every ``*.test.yml`` beside it is a
``promtool test rules`` file. The conventions: alert names ``Evotic<CamelCase>``, a severity
of critical, warning or info, a ``for`` on every alert, a summary and a description (naming the
server by hostname where the alert is about one server, and showing values with their unit),
a runbook anchor in the README, and for every alert a promtool case that fires, one that stays
quiet and one whose series go away.

Where one exporter serves several accounts, every series carries an ``account`` label: each
summary starts with the account, each description names it, every grouping that keeps
``instance`` keeps ``account``, the alerts on the series that /metrics repeats for every account
drop those copies, and every alert has a promtool case with two accounts.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.exposition.families import EXPORTER_METRICS, SNAPSHOT_METRICS

from .processes import ROOT
from .prometheus_server import PROMTOOL

pytestmark = pytest.mark.e2e  # promtool runs as a process

RULES_DIR = ROOT / "deploy/prometheus/rules"
RULE_FILES = sorted(RULES_DIR.glob("*.rules.yml"))
TEST_FILES = sorted(RULES_DIR.glob("*.test.yml"))
SEVERITIES = {"critical", "warning", "info"}
RUNBOOK = "https://github.com/evotic/evotic-exporter/blob/main/README.md#alert-{anchor}"
# How a summary names the account, and how a description adds it to the job or server id.
ACCOUNT_SUMMARY = "{{ with $labels.account }}Account {{ . }}: {{ end }}"
ACCOUNT_DESCRIPTION = re.compile(
    r"\{\{-? with \$labels\.account \}\}, account \{\{ \. \}\}\{\{ end \}\}\)"
)
# What the alerts on per-account series end in: it drops the copies that /metrics of a
# multi-account exporter serves (series with an account, from a target whose up has none).
REPEATED = (
    'unless on (job, instance) (up{account=""} and on (job, instance) evotic_up{account!=""})'
)

Json = dict[str, Any]


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _rules() -> list[Json]:
    return [rule for path in RULE_FILES for group in _load(path)["groups"]
            for rule in group["rules"]]  # fmt: skip


ALERTS = {rule["alert"]: rule for rule in _rules() if "alert" in rule}
RECORDS = {rule["record"]: rule for rule in _rules() if "record" in rule}


def _promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *map(str, args)], capture_output=True, text=True, cwd=RULES_DIR, timeout=120
    )


def test_rule_and_test_files_exist() -> None:
    assert RULE_FILES
    assert TEST_FILES
    assert len(ALERTS) >= 10
    names = [rule["alert"] for rule in _rules() if "alert" in rule]
    assert len(names) == len(set(names)), "one rule per alert name"


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(path: Path) -> None:
    result = _promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_test_rules(path: Path) -> None:
    result = _promtool("test", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules_can_fail(tmp_path: Path) -> None:
    """A test file that expects the wrong thing fails, so a passing run means something."""
    for path in RULE_FILES:
        (tmp_path / path.name).write_text(path.read_text(encoding="utf-8"))
    document = _load(RULES_DIR / "evotic-exporter.test.yml")
    for group in document["tests"]:
        for case in group.get("alert_rule_test", []):
            case["exp_alerts"] = [] if case.get("exp_alerts") else [{"exp_labels": {}}]
    wrong = tmp_path / "wrong.test.yml"
    wrong.write_text(yaml.safe_dump(document))
    result = subprocess.run([PROMTOOL, "test", "rules", str(wrong)], capture_output=True,
                            text=True, cwd=tmp_path, timeout=120)  # fmt: skip
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def test_every_rule_file_is_tested() -> None:
    tested = {
        (path.parent / name).resolve() for path in TEST_FILES for name in _load(path)["rule_files"]
    }
    assert tested == {path.resolve() for path in RULE_FILES}


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_recording_groups_are_evaluated_first(path: Path) -> None:
    """Without an order promtool evaluates groups in any order, and results would flicker."""
    document = _load(path)
    groups = [
        group for name in document["rule_files"] for group in _load(path.parent / name)["groups"]
    ]
    recording = [g["name"] for g in groups if any("record" in r for r in g["rules"])]
    if not recording:
        return
    order = document.get("group_eval_order", [])
    assert set(order) == {g["name"] for g in groups}
    assert order[: len(recording)] == recording


# --------------------------------------------------------------------------- conventions


def _per_server(rule: Json) -> bool:
    return bool(re.search(r"\bevotic(_|:)server_", rule["expr"]))


@pytest.mark.parametrize("name", ALERTS)
def test_alert_conventions(name: str) -> None:
    rule = ALERTS[name]
    assert re.fullmatch(r"Evotic(?:[A-Z][a-z]*|[0-9]+)+", name), "Evotic + CamelCase"
    assert rule["labels"]["severity"] in SEVERITIES
    assert re.fullmatch(r"\d+[mh]", rule["for"]), "a for: that rides out flapping"
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    assert annotations["runbook_url"] == RUNBOOK.format(anchor=f"{name.lower()}")
    if _per_server(rule):
        assert "$labels.hostname" in annotations["summary"]
        assert "$labels.hostname" in annotations["description"]
    else:
        assert "$labels.hostname" not in annotations["summary"] + annotations["description"]
    if not _absent(rule):
        assert annotations["summary"].startswith(ACCOUNT_SUMMARY), name
        assert ACCOUNT_DESCRIPTION.search(annotations["description"]), name
    for text in annotations.values():
        # A bare $value prints 0.9534 or 5.3e+12; the humanize functions add the unit's scale.
        for use in re.findall(r"\$value[^}]*", text):
            assert re.search(r"\|\s*humanize", use), f"{name}: {{{{ {use} }}}} has no unit"


def _absent(rule: Json) -> bool:
    """An alert on absent() has no labels but those of its rule, so no account to name."""
    return rule["expr"].strip().startswith("absent(")


def _per_account(rule: Json) -> bool:
    """Over series the exporter serves per account, not per server: /metrics repeats those."""
    expr = rule["expr"].replace(REPEATED, "")
    return any(not name.startswith("evotic_server_") for name in re.findall(r"\bevotic_\w+", expr))


@pytest.mark.parametrize("name", ALERTS)
def test_alerts_on_per_account_series_drop_the_copies_of_metrics(name: str) -> None:
    rule = ALERTS[name]
    if _per_account(rule):
        assert rule["expr"].rstrip().endswith(REPEATED), name
    else:
        assert REPEATED not in rule["expr"], f"{name}: only per-account series are repeated"


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: r.get("alert") or r["record"])
def test_groupings_that_keep_the_instance_keep_the_account(rule: Json) -> None:
    """Two accounts of one exporter share job and instance; only the account tells them apart."""
    expr = rule["expr"].replace(REPEATED, "")
    for clause in re.findall(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)", expr):
        labels = {label.strip() for label in clause.split(",")}
        if "instance" in labels:
            assert "account" in labels, f"{clause} in {expr}"


def test_severity_ladder_of_traffic_alerts() -> None:
    severity = {name: rule["labels"]["severity"] for name, rule in ALERTS.items()}
    assert severity["EvoticTrafficLimitExceeded"] == "critical"
    assert severity["EvoticTrafficForecastOverQuota"] == "warning"
    assert severity["EvoticTrafficQuota95PercentUsed"] == "warning"
    assert severity["EvoticTrafficQuota80PercentUsed"] == "info"


def test_recording_rule_names() -> None:
    assert RECORDS
    for name in RECORDS:
        # level:metric:operations, the Prometheus naming convention for recording rules.
        assert re.fullmatch(r"[a-z][a-z0-9_]*:[a-z][a-z0-9_]*:[a-z0-9_]+", name), name


def _exported() -> set[str]:
    names = {m.name for m in (*SNAPSHOT_METRICS, *EXPORTER_METRICS)}
    return names | {f"{m.name}_{suffix}" for m in EXPORTER_METRICS if m.kind == "histogram"
                    for suffix in ("bucket", "sum", "count")}  # fmt: skip


def test_rules_use_only_exported_or_recorded_series() -> None:
    """promtool cannot know the exporter's metric names; a typo would make a silent rule."""
    exported = _exported()
    for rule in _rules():
        for name in re.findall(r"\bevotic_\w+", rule["expr"]):
            assert name in exported, f"{name} in {rule.get('alert') or rule.get('record')}"
        for name in re.findall(r"\bevotic:\w+:\w+", rule["expr"]):
            assert name in RECORDS, f"{name} is not recorded"


def test_every_recording_rule_is_used() -> None:
    dashboards = "".join(
        path.read_text(encoding="utf-8") for path in (ROOT / "grafana/dashboards").glob("*.json")
    )
    expressions = "".join(rule["expr"] for rule in _rules())
    for name in RECORDS:
        uses = expressions.count(name) - RECORDS[name]["expr"].count(name)
        assert uses or name in dashboards, f"{name} is recorded for nothing"


# --------------------------------------------------------------------------- test coverage


def _cases() -> dict[str, dict[str, bool]]:
    """For every alert name: is there a firing case, a quiet case, a case with series gone."""
    found: dict[str, dict[str, bool]] = {}
    for path in TEST_FILES:
        for group in _load(path)["tests"]:
            gone = any(
                re.search(r"(^|\s)(stale|_)(x\d+)?(\s|$)", str(series["values"]))
                for series in group.get("input_series", [])
            )
            for case in group.get("alert_rule_test", []):
                fresh = {"fires": False, "quiet": False, "gone": False}
                seen = found.setdefault(case["alertname"], fresh)
                if case.get("exp_alerts"):
                    seen["fires"] = True
                else:
                    seen["quiet"] = True
                seen["gone"] = seen["gone"] or gone
    return found


@pytest.mark.parametrize("name", ALERTS)
def test_every_alert_fires_stays_quiet_and_survives_its_target_going(name: str) -> None:
    cases = _cases().get(name)
    assert cases is not None, f"no promtool test for {name}"
    assert cases == {"fires": True, "quiet": True, "gone": True}


def test_tests_only_name_existing_alerts() -> None:
    assert set(_cases()) <= set(ALERTS)


_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _series_labels(series: str) -> dict[str, str]:
    """The labels of a promtool input series, ``__name__`` included."""
    name, _, matchers = series.partition("{")
    return {"__name__": name, **dict(_LABEL.findall(matchers))}


def _two_account_cases() -> dict[str, list[tuple[list[dict[str, str]], list[Json]]]]:
    """For every alert name: the input series' labels and the expected alerts of every case
    whose input has two accounts or more."""
    found: dict[str, list[tuple[list[dict[str, str]], list[Json]]]] = {}
    for path in TEST_FILES:
        for group in _load(path)["tests"]:
            inputs = [_series_labels(s["series"]) for s in group.get("input_series", [])]
            if len({labels.get("account") for labels in inputs} - {None}) < 2:
                continue
            for case in group.get("alert_rule_test", []):
                found.setdefault(case["alertname"], []).append((inputs, case.get("exp_alerts", [])))
    return found


@pytest.mark.parametrize("name", [n for n, rule in ALERTS.items() if not _absent(rule)])
def test_every_alert_has_a_two_account_case_that_names_the_account(name: str) -> None:
    cases = _two_account_cases().get(name, [])
    firing = [alert for _, alerts in cases for alert in alerts]
    assert firing, f"no promtool case with two accounts where {name} fires"
    quiet = [
        account
        for inputs, alerts in cases
        for account in {labels.get("account") for labels in inputs} - {None}
        if alerts and account not in {a["exp_labels"].get("account") for a in alerts}
    ]
    assert quiet, f"{name}: no two-account case where one account fires and another does not"
    for alert in firing:
        account = alert["exp_labels"].get("account")
        summary = alert["exp_annotations"]["summary"]
        if account is None:
            assert not summary.startswith("Account "), summary
        else:
            assert summary.startswith(f"Account {account}: "), summary
            assert f"account {account})" in alert["exp_annotations"]["description"]


@pytest.mark.parametrize("name", [n for n, rule in ALERTS.items() if _per_account(rule)])
def test_per_account_alerts_fire_once_per_account_with_the_copies_of_metrics(name: str) -> None:
    """A case feeds each account's series from its /probe target and again from /metrics."""
    for inputs, alerts in _two_account_cases().get(name, []):
        targets: dict[str, set[str]] = {}
        for labels in inputs:
            if labels["__name__"] != "up" and "account" in labels:
                targets.setdefault(labels["account"], set()).add(labels["job"])
        if alerts and all(len(jobs) > 1 for jobs in targets.values()):
            accounts = [a["exp_labels"].get("account") for a in alerts]
            assert None not in accounts
            assert len(accounts) == len(set(accounts)), f"{name}: an account alerts twice"
            return
    raise AssertionError(f"{name}: no firing case with each account's series in two jobs")


# --------------------------------------------------------------------------- runbooks


def _github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_runbook_anchors_exist_in_the_readme() -> None:
    anchors = {
        _github_anchor(line.lstrip("#"))
        for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    }
    missing = [name for name in ALERTS if f"alert-{name.lower()}" not in anchors]
    assert not missing, f"README.md has no runbook heading for {missing}"


def test_the_readme_alert_table_lists_every_alert_with_its_severity_and_wait() -> None:
    rows = {}
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("| `Evotic") and len(cells) == 4:
            rows[cells[0].strip("`")] = (cells[1], cells[2])
    assert rows == {
        name: (rule["labels"]["severity"], rule["for"]) for name, rule in ALERTS.items()
    }
