"""Write the Grafana dashboards in ``grafana/dashboards/`` from the definitions in this file.

    python grafana/generate.py           # rewrite the JSON files
    python grafana/generate.py --check   # exit 1 when a committed file differs from the output

The JSON is committed, so Grafana's file provisioning needs nothing but the files, and
``tests/test_dashboards.py`` holds the committed files equal to this output. Standard library
only, so that it runs anywhere Python does.

The dashboards follow the dashboard-linter's conventions (github.com/grafana/dashboard-linter):
one ``datasource`` variable and no data source uid anywhere else, multi-value ``job`` and
``instance`` variables matched in every selector, ``$__rate_interval`` in every range, and a
unit and a description on every panel. Traffic totals come from the recording rules in
``deploy/prometheus/rules/``: a ``_total`` series may only appear inside rate() or increase().
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DASHBOARDS = Path(__file__).resolve().parent / "dashboards"
# Grafana 11.0 to 11.2 write schema version 39; later versions migrate it on load.
SCHEMA_VERSION = 39
TAGS = ["evotic"]
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
WIDTH = 24

Json = dict[str, Any]

# Label matchers for the dashboard variables.
J = 'job=~"$job", instance=~"$instance"'
HOST = 'hostname="$hostname"'
# Joins between per-server series of one exporter; hostname is left out so a rename mid-query
# still matches.
SERVER_DIRECTION = "on (job, instance, server_id, direction)"


def sel(metric: str, *matchers: str) -> str:
    """``metric{job=~"$job", instance=~"$instance", ...}``."""
    return f"{metric}{{{', '.join((J, *matchers))}}}"


# --------------------------------------------------------------------------- building blocks


@dataclass(frozen=True)
class Query:
    """One panel target. ``instant`` queries return the latest value only (stats, tables)."""

    expr: str
    legend: str = "__auto"
    instant: bool = False
    table: bool = False

    def target(self, ref_id: str) -> Json:
        target: Json = {
            "datasource": DATASOURCE,
            "editorMode": "code",
            "expr": self.expr,
            "legendFormat": self.legend,
            "range": not self.instant,
            "instant": self.instant,
            "refId": ref_id,
        }
        if self.table:
            target["format"] = "table"
        return target


def steps(*levels: tuple[str, float]) -> Json:
    """Absolute thresholds: green below the first level, then each colour from its level on."""
    return {
        "mode": "absolute",
        "steps": [{"color": "green", "value": None}]
        + [{"color": color, "value": value} for color, value in levels],
    }


NO_THRESHOLDS = steps()
RATIO_WARN = steps(("orange", 0.8), ("red", 0.9))
QUOTA = steps(("blue", 0.8), ("orange", 0.95), ("red", 1.0))
DATA_AGE = steps(("orange", 300), ("red", 600))


def value_map(*pairs: tuple[int, str, str]) -> list[Json]:
    """Value mappings ``(value, text, colour)``, for 0/1 flags."""
    return [
        {
            "type": "value",
            "options": {
                str(value): {"index": index, "text": text, "color": color}
                for index, (value, text, color) in enumerate(pairs)
            },
        }
    ]


EXCEEDED = value_map((0, "Within", "green"), (1, "Exceeded", "red"))
POLL_OK = value_map((0, "Failing", "red"), (1, "OK", "green"))
SCRAPE_OK = value_map((0, "Down", "red"), (1, "Up", "green"))


def _panel(
    kind: str,
    title: str,
    description: str,
    queries: Sequence[Query],
    unit: str,
    *,
    thresholds: Json = NO_THRESHOLDS,
    mappings: Sequence[Json] = (),
    custom: Json | None = None,
    options: Json | None = None,
    overrides: Sequence[Json] = (),
    transformations: Sequence[Json] = (),
    color: Json | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
) -> Json:
    defaults: Json = {
        "color": color or {"mode": "thresholds"},
        "mappings": list(mappings),
        "thresholds": thresholds,
        "unit": unit,
    }
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    if custom is not None:
        defaults["custom"] = custom
    panel: Json = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": defaults, "overrides": list(overrides)},
        "options": options or {},
        "targets": [q.target(chr(ord("A") + n)) for n, q in enumerate(queries)],
    }
    if transformations:
        panel["transformations"] = list(transformations)
    return panel


REDUCE_LAST = {"calcs": ["lastNotNull"], "fields": "", "values": False}


def stat(
    title: str,
    description: str,
    queries: Sequence[Query],
    unit: str,
    *,
    thresholds: Json = NO_THRESHOLDS,
    mappings: Sequence[Json] = (),
    text_mode: str = "auto",
    color_mode: str = "value",
) -> Json:
    """The latest value of each series, big."""
    return _panel(
        "stat", title, description, [_instant(q) for q in queries], unit,
        thresholds=thresholds, mappings=mappings,
        options={
            "colorMode": color_mode, "graphMode": "none", "justifyMode": "auto",
            "orientation": "auto", "reduceOptions": REDUCE_LAST, "textMode": text_mode,
            "wideLayout": True, "showPercentChange": False,
        },
    )  # fmt: skip


def gauge(
    title: str, description: str, queries: Sequence[Query], unit: str, thresholds: Json
) -> Json:
    return _panel(
        "gauge", title, description, [_instant(q) for q in queries], unit,
        thresholds=thresholds, minimum=0, maximum=1,
        options={"reduceOptions": REDUCE_LAST, "showThresholdLabels": False,
                 "showThresholdMarkers": True, "orientation": "auto", "sizing": "auto"},
    )  # fmt: skip


def bars(
    title: str,
    description: str,
    query: Query,
    unit: str,
    *,
    thresholds: Json = NO_THRESHOLDS,
    maximum: float | None = None,
) -> Json:
    """A horizontal bar per series: rankings such as a top 10."""
    return _panel(
        "bargauge", title, description, [_instant(query)], unit,
        thresholds=thresholds, minimum=0, maximum=maximum,
        options={
            "displayMode": "gradient", "orientation": "horizontal", "namePlacement": "auto",
            "valueMode": "color", "showUnfilled": True, "sizing": "auto", "minVizHeight": 16,
            "minVizWidth": 8, "maxVizHeight": 300, "reduceOptions": REDUCE_LAST,
        },
    )  # fmt: skip


def pie(title: str, description: str, query: Query, unit: str) -> Json:
    return _panel(
        "piechart", title, description, [_instant(query)], unit,
        color={"mode": "palette-classic"},
        options={
            "pieType": "donut", "displayLabels": ["value"], "reduceOptions": REDUCE_LAST,
            "legend": {"displayMode": "table", "placement": "right", "showLegend": True,
                       "values": ["value"]},
            "tooltip": {"mode": "single", "sort": "none"},
        },
    )  # fmt: skip


def timeseries(
    title: str,
    description: str,
    queries: Sequence[Query],
    unit: str,
    *,
    stack: bool = False,
    bars_: bool = False,
    thresholds: Json = NO_THRESHOLDS,
    threshold_line: bool = False,
    minimum: float | None = 0,
    maximum: float | None = None,
    dashed: Sequence[str] = (),
) -> Json:
    """Values over time; series whose legend is in ``dashed`` are drawn dashed (limits, plans)."""
    custom: Json = {
        "drawStyle": "bars" if bars_ else "line",
        "lineWidth": 1,
        "fillOpacity": 80 if bars_ else (30 if stack else 10),
        "gradientMode": "none",
        "showPoints": "never",
        "spanNulls": False,
        "lineInterpolation": "stepAfter" if bars_ else "linear",
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "axisPlacement": "auto",
        "axisSoftMin": 0,
        "thresholdsStyle": {"mode": "line" if threshold_line else "off"},
    }
    overrides = [
        {
            "matcher": {"id": "byName", "options": name},
            "properties": [
                {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
                {"id": "custom.fillOpacity", "value": 0},
            ],
        }
        for name in dashed
    ]
    return _panel(
        "timeseries", title, description, queries, unit,
        thresholds=thresholds, custom=custom, overrides=overrides,
        color={"mode": "palette-classic"}, minimum=minimum, maximum=maximum,
        options={
            "legend": {"displayMode": "table", "placement": "bottom", "showLegend": True,
                       "calcs": ["lastNotNull", "max"], "sortBy": "Last *", "sortDesc": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    )  # fmt: skip


@dataclass(frozen=True)
class Column:
    """One value column of a table: the query, its header, unit and how cells look."""

    query: str
    header: str
    unit: str
    thresholds: Json | None = None
    mappings: Sequence[Json] = ()


def table(
    title: str,
    description: str,
    columns: Sequence[Column],
    *,
    sort_by: str,
    hide: Iterable[str] = (),
    server_link: bool = True,
) -> Json:
    """One row per series, one column per query, merged on the labels they share."""
    overrides: list[Json] = []
    for column, name in zip(columns, value_columns(len(columns)), strict=True):
        properties: list[Json] = [
            {"id": "displayName", "value": column.header},
            {"id": "unit", "value": column.unit},
        ]
        if column.thresholds is not None:
            properties += [
                {"id": "thresholds", "value": column.thresholds},
                {"id": "custom.cellOptions", "value": {"type": "color-background"}},
            ]
        if column.mappings:
            properties += [
                {"id": "mappings", "value": list(column.mappings)},
                {"id": "custom.cellOptions", "value": {"type": "color-text"}},
            ]
        overrides.append({"matcher": {"id": "byName", "options": name}, "properties": properties})
    if server_link:
        overrides.append(
            {
                "matcher": {"id": "byName", "options": "hostname"},
                "properties": [{"id": "links", "value": [SERVER_LINK]}],
            }
        )
    hidden = dict.fromkeys(("Time", "job", "instance", "__name__", *hide), True)
    return _panel(
        "table", title, description,
        [Query(c.query, instant=True, table=True) for c in columns], "none",
        overrides=overrides,
        custom={"align": "auto", "cellOptions": {"type": "auto"}, "filterable": True},
        transformations=[
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {"excludeByName": hidden}},
        ],
        options={
            "showHeader": True, "cellHeight": "sm",
            "footer": {"show": False, "reducer": ["sum"], "fields": "", "countRows": False},
            "sortBy": [{"displayName": sort_by, "desc": True}],
        },
    )  # fmt: skip


def value_columns(count: int) -> list[str]:
    """The names Grafana gives the value columns of ``count`` table queries."""
    if count == 1:
        return ["Value"]
    return [f"Value #{chr(ord('A') + n)}" for n in range(count)]


def _instant(query: Query) -> Query:
    return Query(query.expr, query.legend, instant=True, table=query.table)


SERVER_LINK = {
    "title": "Open ${__data.fields.hostname} in the server view",
    "url": "/d/evotic-server/evotic-server?${job:queryparam}&${instance:queryparam}"
    "&var-hostname=${__data.fields.hostname}&${__url_time_range}",
}


# --------------------------------------------------------------------------- layout


class Board:
    """Places panels left to right in rows of 24 columns, and numbers them."""

    def __init__(self) -> None:
        self.panels: list[Json] = []
        self._x = 0
        self._y = 0
        self._line_height = 0

    def row(self, title: str) -> None:
        self._new_line()
        self._append({"type": "row", "title": title, "collapsed": False, "panels": []},
                     WIDTH, 1)  # fmt: skip
        self._new_line()

    def add(self, width: int, height: int, *panels: Json) -> None:
        """Each of ``panels`` ``width`` columns wide; a panel that does not fit starts a line."""
        for panel in panels:
            if self._x + width > WIDTH:
                self._new_line()
            self._append(panel, width, height)

    def _append(self, panel: Json, width: int, height: int) -> None:
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"h": height, "w": width, "x": self._x, "y": self._y}
        self.panels.append(panel)
        self._x += width
        self._line_height = max(self._line_height, height)

    def _new_line(self) -> None:
        if self._x:
            self._y += self._line_height
        self._x = 0
        self._line_height = 0


# --------------------------------------------------------------------------- variables


def _query_variable(name: str, label: str, query: str, *, multi: bool) -> Json:
    variable: Json = {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor"},
        # Reload on a time range change, so servers created or renamed since show up.
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "hide": 0,
        "multi": multi,
        "includeAll": multi,
        "options": [],
        "skipUrlSync": False,
    }
    if multi:
        variable["allValue"] = ".+"
        variable["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    else:
        variable["current"] = {}
    return variable


def variables(*, hostname: bool = False) -> list[Json]:
    found = [
        {
            "type": "datasource",
            "name": "datasource",
            "label": "Data source",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "includeAll": False,
            "multi": False,
            "options": [],
            "refresh": 1,
            "regex": "",
            "skipUrlSync": False,
        },
        _query_variable("job", "Job", "label_values(evotic_up, job)", multi=True),
        _query_variable(
            "instance", "Instance", 'label_values(evotic_up{job=~"$job"}, instance)', multi=True
        ),
    ]
    if hostname:
        query = f"label_values({sel('evotic_server_info')}, hostname)"
        found.append(_query_variable("hostname", "Hostname", query, multi=False))
    return found


# A menu of the other Evotic dashboards, keeping the variables and the time range.
LINKS = {
    "type": "dashboards", "title": "Evotic dashboards", "tags": TAGS, "asDropdown": True,
    "includeVars": True, "keepTime": True, "targetBlank": False, "icon": "external link",
    "tooltip": "", "url": "",
}  # fmt: skip
ALERT_ANNOTATIONS = {
    "builtIn": 1, "type": "dashboard", "name": "Annotations & Alerts",
    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
    "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
}  # fmt: skip


def dashboard(
    uid: str,
    title: str,
    description: str,
    board: Board,
    *,
    time_from: str = "now-6h",
    hostname: bool = False,
) -> Json:
    return {
        "uid": uid,
        "title": f"Evotic / {title}",
        "description": description,
        "tags": TAGS,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        # Provisioned from files: changes belong in generate.py, not in the UI.
        "editable": False,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "refresh": "1m",
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        # Billing periods start at 00:00 UTC; showing UTC keeps them on whole days.
        "timezone": "utc",
        "weekStart": "",
        "links": [LINKS],
        "annotations": {"list": [ALERT_ANNOTATIONS]},
        "templating": {"list": variables(hostname=hostname)},
        "panels": board.panels,
    }


# --------------------------------------------------------------------------- dashboards

USED = sel("evotic:server_traffic_bytes:period_to_date")
QUOTA_USED = sel("evotic:server_traffic_quota_used:ratio")
QUOTA_FORECAST = sel("evotic:server_traffic_quota_forecast:ratio")
EXCEEDED_FLAG = sel("evotic_server_traffic_limit_exceeded")
TRAFFIC = sel("evotic_server_traffic_bytes_total")
PREVIOUS = sel("evotic_server_traffic_previous_period_bytes")
QUOTA_BYTES = sel("evotic_server_traffic_quota_bytes")
FORECAST = sel("evotic:server_traffic_bytes:forecast_period_end")
# A server direction over or near its limit: Evotic says it is over, or 80 % of the quota is
# used, or the forecast passes the quota (the thresholds of the alerts).
NEAR_LIMIT = (
    f"({EXCEEDED_FLAG} == 1 or {QUOTA_USED} >= 0.8 or {QUOTA_FORECAST} > 1)"
)  # fmt: skip


def fleet() -> Json:
    board = Board()
    board.row("Fleet")
    board.add(
        4, 4,
        stat("Servers", "Servers in the last successful poll of every selected exporter.",
             [Query(f"sum({sel('evotic_servers')})")], "short", color_mode="none"),
        stat("Running", "Servers whose status is started.",
             [Query(f"sum({sel('evotic_server_running')})")], "short", color_mode="none"),
        stat("Not running", "Servers in any status but started: stopped, installing, "
             "suspended and so on.",
             [Query(f"sum(1 - {sel('evotic_server_running')})")], "short",
             thresholds=steps(("orange", 1))),
        stat("Servers over their traffic limit",
             "Servers for which Evotic reports the traffic limit exceeded in either direction.",
             [Query(f"sum(max by (job, instance, server_id) ({EXCEEDED_FLAG}))")], "short",
             thresholds=steps(("red", 1))),
        stat("API polls", "Whether the last poll of the Evotic API succeeded (the worst of "
             "the selected exporters).",
             [Query(f"min({sel('evotic_up')})")], "none", mappings=POLL_OK),
        stat("Data age", "Time since the oldest of the selected exporters last polled the "
             "API successfully. At 10 minutes (--poll.stale-after) the exporter stops "
             "serving server data.",
             [Query(f"time() - min({sel('evotic_last_successful_poll_timestamp_seconds')})")],
             "s", thresholds=DATA_AGE),
    )  # fmt: skip

    board.row("Status")
    by_status = f"count by (status) ({sel('evotic_server_status')} == 1)"
    board.add(8, 8, pie("Servers by status", "How many servers Evotic reports in each status.",
                        Query(by_status, "{{status}}"), "short"))  # fmt: skip
    board.add(16, 8, timeseries("Servers by status over time",
                                "How many servers were in each status.",
                                [Query(by_status, "{{status}}")], "short", stack=True))  # fmt: skip

    board.row("Capacity and usage")
    board.add(
        4, 4,
        stat("CPU cores booked", "CPU cores of all servers' plans.",
             [Query(f"sum({sel('evotic_server_cpu_cores')})")], "short", color_mode="none"),
        stat("CPU cores in use", "CPU usage of every server times its cores, added up.",
             [Query(f"sum({sel('evotic_server_cpu_usage_ratio')} "
                    f"* {sel('evotic_server_cpu_cores')})")], "short", color_mode="none"),
        stat("Memory booked", "Memory of all servers' plans.",
             [Query(f"sum({sel('evotic_server_memory_bytes')})")], "bytes", color_mode="none"),
        stat("Memory in use", "Memory in use on all servers, as Evotic measures it.",
             [Query(f"sum({sel('evotic_server_memory_used_bytes')})")], "bytes",
             color_mode="none"),
        stat("Disk booked", "Disk space of all servers' plans.",
             [Query(f"sum({sel('evotic_server_disk_bytes')})")], "bytes", color_mode="none"),
        stat("Disk in use", "Disk space in use on all servers, as Evotic measures it.",
             [Query(f"sum({sel('evotic_server_disk_used_bytes')})")], "bytes",
             color_mode="none"),
    )  # fmt: skip
    board.add(
        8, 4,
        stat("Traffic this billing period", "Traffic of all servers since the current "
             "billing period started, per direction.",
             [Query(f"sum by (direction) ({USED})", "{{direction}}")], "bytes",
             color_mode="none"),
        stat("Traffic in the previous billing period",
             "Traffic of all current servers in the previous billing period, per direction.",
             [Query(f"sum by (direction) ({PREVIOUS})", "{{direction}}")], "bytes",
             color_mode="none"),
        stat("Bandwidth", "Traffic of all servers per second, from the growth of the "
             "traffic counters between polls.",
             [Query(f"sum by (direction) (rate({TRAFFIC}[$__rate_interval]))",
                    "{{direction}}")], "Bps", color_mode="none"),
    )  # fmt: skip

    board.row("Top servers")
    board.add(
        6, 10,
        bars("Top 10 CPU usage", "The ten servers using the largest share of their CPU.",
             Query(f"topk(10, {sel('evotic_server_cpu_usage_ratio')})", "{{hostname}}"),
             "percentunit", thresholds=RATIO_WARN, maximum=1),
        bars("Top 10 memory usage", "The ten servers using the largest share of their memory.",
             Query(f"topk(10, {sel('evotic:server_memory_used:ratio')})", "{{hostname}}"),
             "percentunit", thresholds=steps(("orange", 0.8), ("red", 0.95)), maximum=1),
        bars("Top 10 disk usage", "The ten servers using the largest share of their disk.",
             Query(f"topk(10, {sel('evotic:server_disk_used:ratio')})", "{{hostname}}"),
             "percentunit", thresholds=RATIO_WARN, maximum=1),
        bars("Top 10 traffic this period",
             "The ten server directions with the most traffic in this billing period.",
             Query(f"topk(10, {USED})", "{{hostname}} {{direction}}"), "bytes"),
    )  # fmt: skip

    board.row("Traffic limits")
    near = f"and {SERVER_DIRECTION} {NEAR_LIMIT}"
    board.add(24, 10, table(
        "Servers over or near their traffic limit",
        "Server directions that Evotic reports over the limit, that have used 80 % of their "
        "quota, or whose forecast for the period end passes the quota. Quota columns stay "
        "empty where no quota is configured (EVOTIC_TRAFFIC_QUOTA_BYTES, "
        "EVOTIC_TRAFFIC_QUOTA_FILE).",
        [
            Column(f"{USED} {near}", "Used this period", "bytes"),
            Column(f"{QUOTA_USED} {near}", "Quota used", "percentunit", QUOTA),
            Column(f"{QUOTA_FORECAST} {near}", "Quota at period end (forecast)",
                   "percentunit", QUOTA),
            Column(f"{EXCEEDED_FLAG} {near}", "Evotic limit", "none", mappings=EXCEEDED),
        ],
        sort_by="Used this period",
    ))  # fmt: skip
    return dashboard(
        "evotic-fleet", "Fleet overview",
        "All servers of the selected exporters: status, capacity, usage and traffic limits.",
        board,
    )  # fmt: skip


def server() -> Json:
    board = Board()

    def one(metric: str) -> str:
        return sel(metric, HOST)

    board.row("Server")
    board.add(4, 4, stat("Status", "The server's status as Evotic reports it.",
                         [Query(f"{one('evotic_server_status')} == 1", "{{status}}")],
                         "none", text_mode="name", color_mode="none"))  # fmt: skip
    board.add(
        3, 4,
        stat("CPU cores", "CPU cores of the server's plan.",
             [Query(one("evotic_server_cpu_cores"))], "short", color_mode="none"),
        stat("Memory", "Memory of the server's plan.",
             [Query(one("evotic_server_memory_bytes"))], "bytes", color_mode="none"),
        stat("Disk", "Disk space of the server's plan.",
             [Query(one("evotic_server_disk_bytes"))], "bytes", color_mode="none"),
    )  # fmt: skip
    board.add(5, 4, stat("Created", "When the server was created.",
                         [Query(f"{one('evotic_server_created_timestamp_seconds')} * 1000")],
                         "dateTimeAsIso", color_mode="none"))  # fmt: skip
    ips = table(
        "IP addresses", "The server's IP addresses; primary marks the main one.",
        [Column(one("evotic_server_ip_address_info"), "Count", "none")],
        sort_by="primary", hide=("server_id", "hostname", "Value"), server_link=False,
    )  # fmt: skip
    board.add(6, 4, ips)

    board.row("Usage")
    board.add(
        8, 8,
        timeseries("CPU usage", "Share of the server's CPU in use, as Evotic measures it.",
                   [Query(one("evotic_server_cpu_usage_ratio"), "CPU")], "percentunit",
                   maximum=1, thresholds=steps(("red", 0.9)), threshold_line=True),
        timeseries("Memory", "Memory in use against the plan's memory.",
                   [Query(one("evotic_server_memory_used_bytes"), "in use"),
                    Query(one("evotic_server_memory_bytes"), "booked")], "bytes",
                   dashed=["booked"]),
        timeseries("Disk", "Disk space in use against the plan's disk.",
                   [Query(one("evotic_server_disk_used_bytes"), "in use"),
                    Query(one("evotic_server_disk_bytes"), "booked")], "bytes",
                   dashed=["booked"]),
    )  # fmt: skip

    board.row("Traffic")
    board.add(
        12, 8,
        timeseries("Bandwidth", "Traffic per second, from the growth of the traffic counter "
                   "between polls: with the default poll interval of 60 s, ranges of a few "
                   "minutes and longer give the smoothest lines.",
                   [Query(f"rate({one('evotic_server_traffic_bytes_total')}"
                          "[$__rate_interval])", "{{direction}}")], "Bps"),
        timeseries("Traffic this billing period", "Traffic used since the billing period "
                   "started, the quota where one is configured, and the forecast for the "
                   "period end (used so far plus the last day's pace).",
                   [Query(one("evotic:server_traffic_bytes:period_to_date"),
                          "{{direction}} used"),
                    Query(one("evotic_server_traffic_quota_bytes"), "{{direction}} quota"),
                    Query(one("evotic:server_traffic_bytes:forecast_period_end"),
                          "{{direction}} forecast")], "bytes",
                   dashed=["incoming quota", "outgoing quota"]),
    )  # fmt: skip
    board.add(
        6, 6,
        gauge("Quota used", "Share of the traffic quota used in this billing period.",
              [Query(one("evotic:server_traffic_quota_used:ratio"), "{{direction}}")],
              "percentunit", QUOTA),
        stat("Quota at period end (forecast)",
             "The forecast traffic at the end of the billing period, as a share of the quota.",
             [Query(one("evotic:server_traffic_quota_forecast:ratio"), "{{direction}}")],
             "percentunit", thresholds=QUOTA),
        stat("Previous billing period", "Traffic in the previous billing period.",
             [Query(one("evotic_server_traffic_previous_period_bytes"), "{{direction}}")],
             "bytes", color_mode="none"),
        stat("Evotic traffic limit", "Whether Evotic reports the plan's traffic limit "
             "exceeded in this billing period.",
             [Query(one("evotic_server_traffic_limit_exceeded"), "{{direction}}")], "none",
             mappings=EXCEEDED),
    )  # fmt: skip
    return dashboard(
        "evotic-server", "Server",
        "One server, picked by hostname: its plan, usage, traffic and limits.",
        board, time_from="now-24h", hostname=True,
    )  # fmt: skip


def traffic() -> Json:
    board = Board()
    board.row("Billing period")
    board.add(
        4, 4,
        stat("Period start", "When the current billing period started.",
             [Query(f"min({sel('evotic_traffic_period_start_timestamp_seconds')}) * 1000")],
             "dateTimeAsIso", color_mode="none"),
        stat("Period end", "When the current billing period ends.",
             [Query(f"max({sel('evotic_traffic_period_end_timestamp_seconds')}) * 1000")],
             "dateTimeAsIso", color_mode="none"),
        stat("Period elapsed", "Share of the current billing period that has passed.",
             [Query(f"max({sel('evotic:traffic_period_elapsed:ratio')})")], "percentunit",
             color_mode="none"),
    )  # fmt: skip
    board.add(
        6, 4,
        stat("This period", "Traffic of all servers in the current billing period.",
             [Query(f"sum by (direction) ({USED})", "{{direction}}")], "bytes",
             color_mode="none"),
        stat("Previous period", "Traffic of all current servers in the previous billing "
             "period.",
             [Query(f"sum by (direction) ({PREVIOUS})", "{{direction}}")], "bytes",
             color_mode="none"),
    )  # fmt: skip

    board.row("Current and previous period")
    board.add(
        12, 9,
        timeseries("Fleet traffic: this period and the previous one",
                   "Traffic of all servers since the billing period started (solid) against "
                   "their total in the whole previous period (dashed).",
                   [Query(f"sum by (direction) ({USED})", "{{direction}} this period"),
                    Query(f"sum by (direction) ({PREVIOUS})", "{{direction}} previous period")],
                   "bytes", dashed=["incoming previous period", "outgoing previous period"]),
        table("Per server: this period and the previous one",
              "Each server direction's traffic so far in this billing period, in the whole "
              "previous period, and the first as a share of the second.",
              [Column(USED, "This period", "bytes"),
               Column(PREVIOUS, "Previous period", "bytes"),
               Column(f"{USED} / ({PREVIOUS} > 0)", "This period / previous",
                      "percentunit")],
              sort_by="This period"),
    )  # fmt: skip

    board.row("Bandwidth")
    board.add(
        12, 8,
        timeseries("Fleet bandwidth", "Traffic of all servers per second, per direction.",
                   [Query(f"sum by (direction) (rate({TRAFFIC}[$__rate_interval]))",
                          "{{direction}}")], "Bps"),
        timeseries("Top 10 servers by bandwidth",
                   "The ten server directions with the highest bandwidth at each moment.",
                   [Query(f"topk(10, rate({TRAFFIC}[$__rate_interval]))",
                          "{{hostname}} {{direction}}")], "Bps"),
    )  # fmt: skip

    board.row("Forecast against quota")
    board.add(
        12, 10,
        timeseries("Quota used and period elapsed",
                   "The ten server directions that have used the largest share of their "
                   "quota, against the share of the billing period that has passed (dashed): "
                   "a line above the dashed one is ahead of the pace the quota allows.",
                   [Query(f"topk(10, {QUOTA_USED})", "{{hostname}} {{direction}}"),
                    Query(f"max({sel('evotic:traffic_period_elapsed:ratio')})",
                          "period elapsed")], "percentunit",
                   thresholds=steps(("red", 1)), threshold_line=True,
                   dashed=["period elapsed"]),
        table("Forecast against quota",
              "Every server direction with a quota: used so far, the quota, and the forecast "
              "for the end of the billing period (used so far plus the last day's pace for "
              "the time left).",
              [Column(f"{USED} and {SERVER_DIRECTION} {QUOTA_BYTES}", "Used this period",
                      "bytes"),
               Column(QUOTA_BYTES, "Quota", "bytes"),
               Column(f"{FORECAST} and {SERVER_DIRECTION} {QUOTA_BYTES}",
                      "Forecast at period end", "bytes"),
               Column(QUOTA_FORECAST, "Forecast / quota", "percentunit", QUOTA)],
              sort_by="Forecast / quota"),
    )  # fmt: skip
    return dashboard(
        "evotic-traffic", "Traffic and limits",
        "Traffic per billing period: this period against the previous one, bandwidth, and the "
        "forecast for the period end against the quota.",
        board, time_from="now-7d",
    )  # fmt: skip


def exporter() -> Json:
    board = Board()
    age = f"time() - {sel('evotic_last_successful_poll_timestamp_seconds')}"
    board.row("Now")
    board.add(
        4, 4,
        stat("API polls", "Whether the exporter's last poll of the Evotic API succeeded "
             "(evotic_up).",
             [Query(sel("evotic_up"), "{{instance}}")], "none", mappings=POLL_OK),
        stat("Scrapes", "Whether Prometheus's last scrape of the exporter succeeded (up).",
             [Query(sel("up"), "{{instance}}")], "none", mappings=SCRAPE_OK),
        stat("Data age", "Time since the last successful poll. At 10 minutes "
             "(--poll.stale-after) the exporter stops serving server data.",
             [Query(age, "{{instance}}")], "s", thresholds=DATA_AGE),
        stat("Servers", "Servers in the last successful poll.",
             [Query(sel("evotic_servers"), "{{instance}}")], "short", color_mode="none"),
        stat("Records set aside", "Server records in the last listing that were invalid or "
             "duplicates, and left out.",
             [Query(sel("evotic_servers_rejected"), "{{instance}}")], "short",
             thresholds=steps(("orange", 1))),
        stat("Version", "The exporter's version.",
             [Query(sel("evotic_exporter_build_info"), "{{version}}")], "none",
             text_mode="name", color_mode="none"),
    )  # fmt: skip

    board.row("Polls")
    board.add(
        12, 8,
        timeseries("Poll duration", "How long the last poll took, in total and per phase "
                   "(fetch, validate, status, render).",
                   [Query(sel("evotic_poll_duration_seconds"), "{{instance}} total"),
                    Query(sel("evotic_poll_phase_duration_seconds"),
                          "{{instance}} {{phase}}")], "s"),
        timeseries("Failed polls by reason", "Failed polls of the Evotic API per reason.",
                   [Query(f"sum by (reason) (increase({sel('evotic_poll_errors_total')}"
                          "[$__rate_interval]))", "{{reason}}")], "short", bars_=True),
        timeseries("Data age", "Time since the last successful poll; the line marks five "
                   "minutes, where EvoticDataStale starts to wait.",
                   [Query(age, "{{instance}}")], "s", thresholds=steps(("red", 300)),
                   threshold_line=True),
        timeseries("Poll and scrape success", "1 while the last poll of the API (evotic_up) "
                   "and the last scrape by Prometheus (up) succeeded, 0 while they failed.",
                   [Query(sel("evotic_up"), "{{instance}} poll"),
                    Query(sel("up"), "{{instance}} scrape")], "none", maximum=1),
    )  # fmt: skip

    board.row("Evotic API")
    quantiles = [
        Query(
            f"histogram_quantile({q}, sum by (le, endpoint) "
            f"(rate({sel('evotic_api_request_duration_seconds_bucket')}[$__rate_interval])))",
            f"{{{{endpoint}}}} p{round(q * 100)}",
        )
        for q in (0.5, 0.9, 0.99)
    ]
    board.add(
        12, 8,
        timeseries("API requests by status code", "Requests to the Evotic API per second, by "
                   "endpoint and HTTP status code; 429 means rate-limited, timeout and "
                   "connection mean no answer came.",
                   [Query(f"sum by (endpoint, code) (rate({sel('evotic_api_requests_total')}"
                          "[$__rate_interval]))", "{{endpoint}} {{code}}")], "reqps",
                   stack=True),
        timeseries("API request duration", "Median, 90th and 99th percentile of the duration "
                   "of Evotic API requests, by endpoint.", quantiles, "s"),
    )  # fmt: skip

    board.row("Exporter process")
    board.add(
        8, 8,
        timeseries("CPU", "CPU time the exporter process uses per second.",
                   [Query(f"rate({sel('process_cpu_seconds_total')}[$__rate_interval])",
                          "{{instance}}")], "percentunit"),
        timeseries("Memory", "Resident memory of the exporter process.",
                   [Query(sel("process_resident_memory_bytes"), "{{instance}}")], "bytes"),
        timeseries("Scrape duration", "How long Prometheus's scrapes of the exporter take.",
                   [Query(sel("scrape_duration_seconds"), "{{instance}}")], "s"),
    )  # fmt: skip
    return dashboard(
        "evotic-exporter", "Exporter health",
        "The exporter itself: its polls of the Evotic API, the API's answers, data age and "
        "the process.",
        board,
    )  # fmt: skip


def build() -> dict[str, Json]:
    """Every dashboard by file name."""
    return {
        "evotic-fleet.json": fleet(),
        "evotic-server.json": server(),
        "evotic-traffic.json": traffic(),
        "evotic-exporter.json": exporter(),
    }


def render(board: Json) -> str:
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write grafana/dashboards/*.json.")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a file is missing or differs"
    )
    parser.add_argument("--output", type=Path, default=DASHBOARDS, help="%(default)s")
    args = parser.parse_args(argv)
    stale = []
    for name, board in build().items():
        path = args.output / name
        text = render(board)
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        if args.check:
            stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python grafana/generate.py",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
