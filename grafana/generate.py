"""Write the Grafana dashboards in ``grafana/dashboards/`` from the definitions in this file.

    python grafana/generate.py           # rewrite the JSON files
    python grafana/generate.py --check   # exit 1 when a committed file differs from the output

The dashboards are built with Grafana's own SDK (``grafana-foundation-sdk``, the
``dashboards`` extra), whose builders know each panel type's options and Grafana's schema.
The JSON is committed, so Grafana's file provisioning needs nothing but the files, and
``tests/test_dashboards.py`` holds the committed files equal to this output.

The dashboards follow the dashboard-linter's conventions (github.com/grafana/dashboard-linter):
one ``datasource`` variable and no data source uid anywhere else, multi-value ``account``,
``job`` and ``instance`` variables matched in every selector, ``$__rate_interval`` in every
range, and a unit and a description on every panel. Traffic totals come from the recording
rules in ``deploy/prometheus/rules/``: a ``_total`` series may only appear inside rate() or
increase().
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias, TypeVar

from grafana_foundation_sdk.builders import common, prometheus
from grafana_foundation_sdk.builders.bargauge import Panel as BarGaugePanel
from grafana_foundation_sdk.builders.dashboard import (
    AnnotationQuery,
    Dashboard,
    DashboardLink,
    DatasourceVariable,
    FieldColor,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.builders.gauge import Panel as GaugePanel
from grafana_foundation_sdk.builders.piechart import Panel as PieChartPanel
from grafana_foundation_sdk.builders.piechart import PieChartLegendOptions
from grafana_foundation_sdk.builders.stat import Panel as StatPanel
from grafana_foundation_sdk.builders.table import Panel as TablePanel
from grafana_foundation_sdk.builders.timeseries import Panel as TimeseriesPanel
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.common import (
    AxisPlacement,
    BarGaugeDisplayMode,
    BarGaugeNamePlacement,
    BarGaugeSizing,
    BarGaugeValueMode,
    BigValueColorMode,
    BigValueGraphMode,
    BigValueJustifyMode,
    BigValueTextMode,
    FieldTextAlignment,
    GraphDrawStyle,
    GraphGradientMode,
    GraphThresholdsStyleMode,
    LegendDisplayMode,
    LegendPlacement,
    LineInterpolation,
    LineStyle,
    SortOrder,
    StackingMode,
    TableAutoCellOptions,
    TableCellHeight,
    TableColoredBackgroundCellOptions,
    TableColorTextCellOptions,
    TooltipDisplayMode,
    VisibilityMode,
    VizOrientation,
)
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DashboardLinkType,
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    FieldColorModeId,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.piechart import (
    PieChartLabels,
    PieChartLegendValues,
    PieChartType,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat, QueryEditorMode

DASHBOARDS = Path(__file__).resolve().parent / "dashboards"
TAGS = ["evotic"]
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")

# Label matchers for the dashboard variables. The account variable's All is `.*`, which also
# matches a series without the label, as a single-account exporter serves them.
TARGET = 'job=~"$job", instance=~"$instance"'
J = f'{TARGET}, account=~"$account"'
# The exporter's own series (process, build info, the scrape of /metrics) belong to no account
# and serve every account: they stay in view whichever accounts are picked.
SHARED = f'{TARGET}, account=~"$account|"'
HOST = 'hostname="$hostname"'
# Joins between per-server series of one account; hostname is left out so a rename mid-query
# still matches.
SERVER_DIRECTION = "on (job, instance, account, server_id, direction)"

# One exporter may serve several accounts. Prometheus then scrapes /probe?target=<account> once
# per account, giving every series of that scrape (`up` included) the target label `account`,
# and /metrics, which repeats each account's own series (evotic_up, evotic_servers, the poll and
# API metrics, the billing period) with an `account` label the exporter sets, under a target
# whose `up` has none. Summed over both jobs, every account would count twice. This clause
# drops exactly those copies: series with an account from a target whose `up` has none. It
# never drops a series without the label (a single-account exporter's) nor one whose target has
# no `up` (federated series), so it can only remove a copy, never the last series of an
# account. The alerting rules use the same clause, without the variables.
REPEATED = (
    f'unless on (job, instance) (up{{{TARGET}, account=""}} '
    f'and on (job, instance) evotic_up{{{TARGET}, account!=""}})'
)


def sel(metric: str, *matchers: str) -> str:
    """``metric{job=~"$job", instance=~"$instance", account=~"$account", ...}``."""
    return f"{metric}{{{', '.join((J, *matchers))}}}"


def sel_shared(metric: str) -> str:
    """A selector of the exporter's own series, which have no account."""
    return f"{metric}{{{SHARED}}}"


def once(expr: str) -> str:
    """``expr`` over per-account series, without the copies that /metrics repeats."""
    return f"({expr} {REPEATED})"


def named(expr: str) -> str:
    """``expr`` with a ``source`` label for legends: the instance, then the account if any.

    Grafana writes a label's name where a legend names a label the series lacks, so a legend
    cannot say ``{{account}}`` to single-account series; ``{{source}}`` suits both.
    """
    return f'label_join({expr}, "source", " ", "instance", "account")'


# --------------------------------------------------------------------------- building blocks


@dataclass(frozen=True)
class Query:
    """One panel target: a PromQL expression and the legend of its series."""

    expr: str
    legend: str = "__auto"

    def target(self, ref_id: str, *, instant: bool, table: bool = False) -> prometheus.Dataquery:
        """Instant targets return the latest value only (stats, gauges, tables)."""
        target = (
            prometheus.Dataquery()
            .datasource(DATASOURCE)
            .editor_mode(QueryEditorMode.CODE)
            .expr(self.expr)
            .legend_format(self.legend)
            .ref_id(ref_id)
        )
        target = target.instant() if instant else target.range()
        return target.format(PromQueryFormat.TABLE) if table else target


def steps(*levels: tuple[str, float]) -> ThresholdsConfig:
    """Absolute thresholds: green below the first level, then each colour from its level on."""
    return (
        ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps(
            [Threshold(value=None, color="green")]
            + [Threshold(value=value, color=color) for color, value in levels]
        )
    )


NO_THRESHOLDS = steps()
RATIO_WARN = steps(("orange", 0.8), ("red", 0.9))
QUOTA = steps(("blue", 0.8), ("orange", 0.95), ("red", 1.0))
DATA_AGE = steps(("orange", 300), ("red", 600))


def value_map(*pairs: tuple[int, str, str]) -> list[model.ValueMapping]:
    """Value mappings ``(value, text, colour)``, for 0/1 flags."""
    results = {
        str(value): ValueMappingResult(text=text, color=color, index=index)
        for index, (value, text, color) in enumerate(pairs)
    }
    return [ValueMap(options=results)]


EXCEEDED = value_map((0, "Within", "green"), (1, "Exceeded", "red"))
POLL_OK = value_map((0, "Failing", "red"), (1, "OK", "green"))
SCRAPE_OK = value_map((0, "Down", "red"), (1, "Up", "green"))

# Every panel type below shares the builder methods _panel calls.
P = TypeVar("P", StatPanel, GaugePanel, BarGaugePanel, PieChartPanel, TimeseriesPanel, TablePanel)


def _panel(
    panel: P,
    title: str,
    description: str,
    queries: Sequence[Query],
    unit: str,
    *,
    instant: bool,
    table_format: bool = False,
    thresholds: ThresholdsConfig = NO_THRESHOLDS,
    mappings: Sequence[model.ValueMapping] = (),
    color: FieldColorModeId = FieldColorModeId.THRESHOLDS,
    minimum: float | None = None,
    maximum: float | None = None,
) -> P:
    """The parts every panel has: texts, data source, targets, unit, colours, thresholds."""
    panel = (
        panel.title(title)
        .description(description)
        .datasource(DATASOURCE)
        .color_scheme(FieldColor().mode(color))
        .mappings(list(mappings))
        .thresholds(thresholds)
        .unit(unit)
    )
    if minimum is not None:
        panel = panel.min(minimum)
    if maximum is not None:
        panel = panel.max(maximum)
    for n, query in enumerate(queries):
        panel = panel.with_target(query.target(ref_id(n), instant=instant, table=table_format))
    return panel


def ref_id(n: int) -> str:
    """The letter Grafana gives the ``n``-th target of a panel (from 0): A, B, C..."""
    return chr(ord("A") + n)


def last_value() -> common.ReduceDataOptions:
    return common.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False)


def stat(
    title: str,
    description: str,
    queries: Sequence[Query],
    unit: str,
    *,
    thresholds: ThresholdsConfig = NO_THRESHOLDS,
    mappings: Sequence[model.ValueMapping] = (),
    show_name: bool = False,
    colored: bool = True,
) -> StatPanel:
    """The latest value of each series, big; ``show_name`` shows the legend instead."""
    panel = _panel(
        StatPanel(), title, description, queries, unit,
        instant=True, thresholds=thresholds, mappings=mappings,
    )  # fmt: skip
    return (
        panel.color_mode(BigValueColorMode.VALUE if colored else BigValueColorMode.NONE)
        .graph_mode(BigValueGraphMode.NONE)
        .justify_mode(BigValueJustifyMode.AUTO)
        .orientation(VizOrientation.AUTO)
        .reduce_options(last_value())
        .text_mode(BigValueTextMode.NAME if show_name else BigValueTextMode.AUTO)
        .wide_layout(True)
        .show_percent_change(False)
    )


def gauge(
    title: str,
    description: str,
    queries: Sequence[Query],
    unit: str,
    thresholds: ThresholdsConfig,
) -> GaugePanel:
    """A share from 0 to 1 on a dial."""
    panel = _panel(
        GaugePanel(), title, description, queries, unit,
        instant=True, thresholds=thresholds, minimum=0, maximum=1,
    )  # fmt: skip
    return (
        panel.reduce_options(last_value())
        .show_threshold_labels(False)
        .show_threshold_markers(True)
        .orientation(VizOrientation.AUTO)
        .sizing(BarGaugeSizing.AUTO)
    )


def bars(
    title: str,
    description: str,
    query: Query,
    unit: str,
    *,
    thresholds: ThresholdsConfig = NO_THRESHOLDS,
    maximum: float | None = None,
) -> BarGaugePanel:
    """A horizontal bar per series: rankings such as a top 10."""
    panel = _panel(
        BarGaugePanel(), title, description, [query], unit,
        instant=True, thresholds=thresholds, minimum=0, maximum=maximum,
    )  # fmt: skip
    return (
        panel.display_mode(BarGaugeDisplayMode.GRADIENT)
        .orientation(VizOrientation.HORIZONTAL)
        .name_placement(BarGaugeNamePlacement.AUTO)
        .value_mode(BarGaugeValueMode.COLOR)
        .show_unfilled(True)
        .sizing(BarGaugeSizing.AUTO)
        .min_viz_height(16)
        .min_viz_width(8)
        .max_viz_height(300)
        .reduce_options(last_value())
    )


def pie(title: str, description: str, query: Query, unit: str) -> PieChartPanel:
    """Shares of a whole, with a table legend of the values."""
    panel = _panel(
        PieChartPanel(), title, description, [query], unit,
        instant=True, color=FieldColorModeId.PALETTE_CLASSIC,
    )  # fmt: skip
    legend = (
        PieChartLegendOptions()
        .display_mode(LegendDisplayMode.TABLE)
        .placement(LegendPlacement.RIGHT)
        .show_legend(True)
        .values([PieChartLegendValues.VALUE])
    )
    return (
        panel.pie_type(PieChartType.DONUT)
        .display_labels([PieChartLabels.VALUE])
        .reduce_options(last_value())
        .legend(legend)
        .tooltip(common.VizTooltipOptions().mode(TooltipDisplayMode.SINGLE).sort(SortOrder.NONE))
    )


def timeseries(
    title: str,
    description: str,
    queries: Sequence[Query],
    unit: str,
    *,
    stack: bool = False,
    bars_: bool = False,
    thresholds: ThresholdsConfig = NO_THRESHOLDS,
    threshold_line: bool = False,
    minimum: float | None = 0,
    maximum: float | None = None,
    dashed: Sequence[str] = (),
) -> TimeseriesPanel:
    """Values over time; series whose legend is in ``dashed`` are drawn dashed (limits, plans)."""
    panel = _panel(
        TimeseriesPanel(), title, description, queries, unit,
        instant=False, thresholds=thresholds, color=FieldColorModeId.PALETTE_CLASSIC,
        minimum=minimum, maximum=maximum,
    )  # fmt: skip
    legend = (
        common.VizLegendOptions()
        .display_mode(LegendDisplayMode.TABLE)
        .placement(LegendPlacement.BOTTOM)
        .show_legend(True)
        .calcs(["lastNotNull", "max"])
        .sort_by("Last *")
        .sort_desc(True)
    )
    panel = (
        panel.draw_style(GraphDrawStyle.BARS if bars_ else GraphDrawStyle.LINE)
        .line_width(1)
        .fill_opacity(80 if bars_ else (30 if stack else 10))
        .gradient_mode(GraphGradientMode.NONE)
        .show_points(VisibilityMode.NEVER)
        .span_nulls(False)
        .line_interpolation(LineInterpolation.STEP_AFTER if bars_ else LineInterpolation.LINEAR)
        .stacking(
            common.StackingConfig()
            .mode(StackingMode.NORMAL if stack else StackingMode.NONE)
            .group("A")
        )
        .axis_placement(AxisPlacement.AUTO)
        .axis_soft_min(0)
        .thresholds_style(
            common.GraphThresholdsStyleConfig().mode(
                GraphThresholdsStyleMode.LINE if threshold_line else GraphThresholdsStyleMode.OFF
            )
        )
        .legend(legend)
        .tooltip(
            common.VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING)
        )
    )
    for name in dashed:
        panel = panel.override_by_name(
            name,
            [
                DynamicConfigValue(
                    id_val="custom.lineStyle", value=LineStyle(fill="dash", dash=[10, 10])
                ),
                DynamicConfigValue(id_val="custom.fillOpacity", value=0),
            ],
        )
    return panel


@dataclass(frozen=True)
class Column:
    """One value column of a table: the query, its header, unit and how cells look."""

    query: str
    header: str
    unit: str
    thresholds: ThresholdsConfig | None = None
    mappings: Sequence[model.ValueMapping] = ()


def table(
    title: str,
    description: str,
    columns: Sequence[Column],
    *,
    sort_by: str,
    hide: Iterable[str] = (),
    server_link: bool = True,
) -> TablePanel:
    """One row per series, one column per query, merged on the labels they share."""
    panel = _panel(
        TablePanel(), title, description, [Query(c.query) for c in columns], "none",
        instant=True, table_format=True,
    )  # fmt: skip
    for column, name in zip(columns, value_columns(len(columns)), strict=True):
        properties = [
            DynamicConfigValue(id_val="displayName", value=column.header),
            DynamicConfigValue(id_val="unit", value=column.unit),
        ]
        if column.thresholds is not None:
            properties += [
                DynamicConfigValue(id_val="thresholds", value=column.thresholds.build()),
                DynamicConfigValue(
                    id_val="custom.cellOptions", value=TableColoredBackgroundCellOptions()
                ),
            ]
        if column.mappings:
            properties += [
                DynamicConfigValue(id_val="mappings", value=list(column.mappings)),
                DynamicConfigValue(id_val="custom.cellOptions", value=TableColorTextCellOptions()),
            ]
        panel = panel.override_by_name(name, properties)
    if server_link:
        panel = panel.override_by_name(
            "hostname", [DynamicConfigValue(id_val="links", value=[SERVER_LINK])]
        )
    hidden = dict.fromkeys(("Time", "job", "instance", "__name__", *hide), True)
    return (
        panel.align(FieldTextAlignment.AUTO)
        .cell_options(TableAutoCellOptions())
        .filterable(True)
        .with_transformation(DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            DataTransformerConfig(id_val="organize", options={"excludeByName": hidden})
        )
        .show_header(True)
        .cell_height(TableCellHeight.SM)
        .footer(common.TableFooterOptions().show(False).reducer(["sum"]).count_rows(False))
        .sort_by([common.TableSortByFieldState().display_name(sort_by).desc(True)])
    )


def value_columns(count: int) -> list[str]:
    """The names Grafana gives the value columns of ``count`` table queries."""
    if count == 1:
        return ["Value"]
    return [f"Value #{ref_id(n)}" for n in range(count)]


# A data link on a table cell. The SDK models dashboard links, not data links, and an
# override's value is free-form, so the link is written as Grafana stores it.
SERVER_LINK = {
    "title": "Open ${__data.fields.hostname} in the server view",
    "url": "/d/evotic-server/evotic-server?${account:queryparam}&${job:queryparam}"
    "&${instance:queryparam}"
    "&var-hostname=${__data.fields.hostname}&${__url_time_range}",
}


# --------------------------------------------------------------------------- layout

PanelBuilder: TypeAlias = (
    StatPanel | GaugePanel | BarGaugePanel | PieChartPanel | TimeseriesPanel | TablePanel
)
Item: TypeAlias = Row | PanelBuilder


def row(title: str) -> Row:
    """A row header across the dashboard; the panels after it belong to it."""
    return Row(title).collapsed(False)


def sized(width: int, height: int, *panels: PanelBuilder) -> list[PanelBuilder]:
    """``panels``, each ``width`` of 24 columns wide and ``height`` high.

    The SDK's ``Dashboard`` places panels left to right and starts a new line once 24 columns
    are full, so the widths of a line add up to 24.
    """
    return [panel.span(width).height(height) for panel in panels]


# --------------------------------------------------------------------------- variables


def query_variable(
    name: str, label: str, query: str, *, multi: bool, all_value: str = ".+"
) -> QueryVariable:
    variable = (
        QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        # qryType 1 is a label-values query, in the form Grafana's Prometheus editor saves.
        .query({"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor"})
        # Reload on a time range change, so servers created or renamed since show up.
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .regex("")
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(multi)
        .include_all(multi)
        .options([])
    )
    if multi:
        all_values = VariableOption(selected=True, text=["All"], value=["$__all"])
        variable = variable.all_value(all_value).current(all_values)
    return variable


def variables(*, hostname: bool = False) -> list[DatasourceVariable | QueryVariable]:
    found: list[DatasourceVariable | QueryVariable] = [
        DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .multi(False)
        .include_all(False)
        .regex(""),
        # The account first: the job and instance variables then list what serves the picked
        # accounts (their /probe job, and the /metrics job of a multi-account exporter).
        query_variable(
            "account", "Account", "label_values(evotic_up, account)", multi=True, all_value=".*"
        ),
        query_variable(
            "job", "Job", 'label_values(evotic_up{account=~"$account"}, job)', multi=True
        ),
        query_variable(
            "instance",
            "Instance",
            'label_values(evotic_up{account=~"$account", job=~"$job"}, instance)',
            multi=True,
        ),
    ]
    if hostname:
        query = f"label_values({sel('evotic_server_info')}, hostname)"
        found.append(query_variable("hostname", "Hostname", query, multi=False))
    return found


def dashboards_menu() -> DashboardLink:
    """A menu of the other Evotic dashboards, keeping the variables and the time range."""
    return (
        DashboardLink("Evotic dashboards")
        .type(DashboardLinkType.DASHBOARDS)
        .tags(TAGS)
        .as_dropdown(True)
        .include_vars(True)
        .keep_time(True)
        .target_blank(False)
        .icon("external link")
        .tooltip("")
        .url("")
    )


def alert_annotations() -> AnnotationQuery:
    return (
        AnnotationQuery()
        .built_in(1)
        .type("dashboard")
        .name("Annotations & Alerts")
        .datasource(DataSourceRef(type_val="grafana", uid="-- Grafana --"))
        .enable(True)
        .hide(True)
        .icon_color("rgba(0, 211, 255, 1)")
    )


def dashboard(
    uid: str,
    title: str,
    description: str,
    items: Sequence[Item],
    *,
    time_from: str = "now-6h",
    hostname: bool = False,
) -> model.Dashboard:
    """A dashboard of ``items`` (rows and panels, in reading order), numbered from 1."""
    board = (
        Dashboard(f"Evotic / {title}")
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .version(1)
        # Provisioned from files: changes belong in generate.py, not in the UI.
        .readonly()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .fiscal_year_start_month(0)
        .live_now(False)
        .refresh("1m")
        .time(time_from, "now")
        # Billing periods start at 00:00 UTC; showing UTC keeps them on whole days.
        .timezone("utc")
        .week_start("")
        .link(dashboards_menu())
        .annotation(alert_annotations())
        .variables(list(variables(hostname=hostname)))
    )
    for number, item in enumerate(items, start=1):
        if isinstance(item, Row):
            board = board.with_row(item.id(number))
        else:
            board = board.with_panel(item.id(number))
    return board.build()


# --------------------------------------------------------------------------- dashboards

USED = sel("evotic:server_traffic_bytes:period_to_date")
QUOTA_USED = sel("evotic:server_traffic_quota_used:ratio")
QUOTA_FORECAST = sel("evotic:server_traffic_quota_forecast:ratio")
EXCEEDED_FLAG = sel("evotic_server_traffic_limit_exceeded")
TRAFFIC = sel("evotic_server_traffic_bytes_total")
PREVIOUS = sel("evotic_server_traffic_previous_period_bytes")
QUOTA_BYTES = sel("evotic_server_traffic_quota_bytes")
FORECAST = sel("evotic:server_traffic_bytes:forecast_period_end")
# Recorded from the billing period, which /metrics repeats per account.
ELAPSED = once(sel("evotic:traffic_period_elapsed:ratio"))
# A server direction over or near its limit: Evotic says it is over, or 80 % of the quota is
# used, or the forecast passes the quota (the thresholds of the alerts).
NEAR_LIMIT = (
    f"({EXCEEDED_FLAG} == 1 or {QUOTA_USED} >= 0.8 or {QUOTA_FORECAST} > 1)"
)  # fmt: skip


def fleet() -> model.Dashboard:
    by_status = f"count by (status) ({sel('evotic_server_status')} == 1)"
    near = f"and {SERVER_DIRECTION} {NEAR_LIMIT}"
    # fmt: off
    panels: list[Item] = [
        row("Fleet"),
        *sized(
            4, 4,
            stat("Servers", "Servers exported for the selected accounts, those served from "
                 "their last valid record included.",
                 [Query(f"sum({once(sel('evotic_servers'))})")], "short", colored=False),
            stat("Running", "Servers whose status is started.",
                 [Query(f"sum({sel('evotic_server_running')})")], "short", colored=False),
            stat("Not running", "Servers in any status but started: stopped, installing, "
                 "suspended and so on.",
                 [Query(f"sum(1 - {sel('evotic_server_running')})")], "short",
                 thresholds=steps(("orange", 1))),
            stat("Servers over their traffic limit",
                 "Servers for which Evotic reports the traffic limit exceeded in either direction.",
                 [Query(f"sum(max by (job, instance, account, server_id) ({EXCEEDED_FLAG}))")],
                 "short",
                 thresholds=steps(("red", 1))),
            stat("API polls", "Whether the last poll of the Evotic API succeeded (the worst of "
                 "the selected accounts).",
                 [Query(f"min({once(sel('evotic_up'))})")], "none", mappings=POLL_OK),
            stat("Data age", "Time since the API was last polled successfully for the selected "
                 "account that waits longest. At 10 minutes (--poll.stale-after) the exporter "
                 "stops serving its server data.",
                 [Query("time() - "
                        f"min({once(sel('evotic_last_successful_poll_timestamp_seconds'))})")],
                 "s", thresholds=DATA_AGE),
        ),

        row("Status"),
        *sized(8, 8, pie("Servers by status", "How many servers Evotic reports in each status.",
                            Query(by_status, "{{status}}"), "short")),
        *sized(16, 8, timeseries("Servers by status over time",
                                    "How many servers were in each status.",
                                    [Query(by_status, "{{status}}")], "short", stack=True)),

        row("Capacity and usage"),
        *sized(
            4, 4,
            stat("CPU cores booked", "CPU cores of all servers' plans.",
                 [Query(f"sum({sel('evotic_server_cpu_cores')})")], "short", colored=False),
            stat("CPU cores in use", "CPU usage of every server times its cores, added up.",
                 [Query(f"sum({sel('evotic_server_cpu_usage_ratio')} "
                        f"* {sel('evotic_server_cpu_cores')})")], "short", colored=False),
            stat("Memory booked", "Memory of all servers' plans.",
                 [Query(f"sum({sel('evotic_server_memory_bytes')})")], "bytes", colored=False),
            stat("Memory in use", "Memory in use on all servers, as Evotic measures it.",
                 [Query(f"sum({sel('evotic_server_memory_used_bytes')})")], "bytes",
                 colored=False),
            stat("Disk booked", "Disk space of all servers' plans.",
                 [Query(f"sum({sel('evotic_server_disk_bytes')})")], "bytes", colored=False),
            stat("Disk in use", "Disk space in use on all servers, as Evotic measures it.",
                 [Query(f"sum({sel('evotic_server_disk_used_bytes')})")], "bytes",
                 colored=False),
        ),
        *sized(
            8, 4,
            stat("Traffic this billing period", "Traffic of all servers since the current "
                 "billing period started, per direction.",
                 [Query(f"sum by (direction) ({USED})", "{{direction}}")], "bytes",
                 colored=False),
            stat("Traffic in the previous billing period",
                 "Traffic of all current servers in the previous billing period, per direction.",
                 [Query(f"sum by (direction) ({PREVIOUS})", "{{direction}}")], "bytes",
                 colored=False),
            stat("Bandwidth", "Traffic of all servers per second, from the growth of the "
                 "traffic counters between polls.",
                 [Query(f"sum by (direction) (rate({TRAFFIC}[$__rate_interval]))",
                        "{{direction}}")], "Bps", colored=False),
        ),

        row("Top servers"),
        *sized(
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
        ),

        row("Traffic limits"),
        *sized(24, 10, table(
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
        )),
    ]
    # fmt: on
    return dashboard(
        "evotic-fleet",
        "Fleet overview",
        "All servers of the selected accounts and exporters: status, capacity, usage and "
        "traffic limits.",
        panels,
    )


def server() -> model.Dashboard:
    def one(metric: str) -> str:
        return sel(metric, HOST)

    # fmt: off
    panels: list[Item] = [
        row("Server"),
        *sized(4, 4, stat("Status", "The server's status as Evotic reports it.",
                             [Query(f"{one('evotic_server_status')} == 1", "{{status}}")],
                             "none", show_name=True, colored=False)),
        *sized(
            3, 4,
            stat("CPU cores", "CPU cores of the server's plan.",
                 [Query(one("evotic_server_cpu_cores"))], "short", colored=False),
            stat("Memory", "Memory of the server's plan.",
                 [Query(one("evotic_server_memory_bytes"))], "bytes", colored=False),
            stat("Disk", "Disk space of the server's plan.",
                 [Query(one("evotic_server_disk_bytes"))], "bytes", colored=False),
        ),
        *sized(5, 4, stat("Created", "When the server was created.",
                             [Query(f"{one('evotic_server_created_timestamp_seconds')} * 1000")],
                             "dateTimeAsIso", colored=False)),
        *sized(6, 4, table(
            "IP addresses", "The server's IP addresses; primary marks the main one.",
            [Column(one("evotic_server_ip_address_info"), "Count", "none")],
            sort_by="primary", hide=("server_id", "hostname", "Value"), server_link=False,
        )),

        row("Usage"),
        *sized(
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
        ),

        row("Traffic"),
        *sized(
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
        ),
        *sized(
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
                 "bytes", colored=False),
            stat("Evotic traffic limit", "Whether Evotic reports the plan's traffic limit "
                 "exceeded in this billing period.",
                 [Query(one("evotic_server_traffic_limit_exceeded"), "{{direction}}")], "none",
                 mappings=EXCEEDED),
        ),
    ]
    # fmt: on
    return dashboard(
        "evotic-server",
        "Server",
        "One server, picked by hostname: its plan, usage, traffic and limits.",
        panels,
        time_from="now-24h",
        hostname=True,
    )


def traffic() -> model.Dashboard:
    # fmt: off
    panels: list[Item] = [
        row("Billing period"),
        *sized(
            4, 4,
            stat("Period start", "When the current billing period started (of several "
                 "accounts, the earliest start).",
                 [Query(f"min({once(sel('evotic_traffic_period_start_timestamp_seconds'))})"
                        " * 1000")],
                 "dateTimeAsIso", colored=False),
            stat("Period end", "When the current billing period ends (of several accounts, "
                 "the latest end).",
                 [Query(f"max({once(sel('evotic_traffic_period_end_timestamp_seconds'))})"
                        " * 1000")],
                 "dateTimeAsIso", colored=False),
            stat("Period elapsed", "Share of the current billing period that has passed (of "
                 "several accounts, the largest).",
                 [Query(f"max({ELAPSED})")], "percentunit", colored=False),
        ),
        *sized(
            6, 4,
            stat("This period", "Traffic of all servers in the current billing period.",
                 [Query(f"sum by (direction) ({USED})", "{{direction}}")], "bytes",
                 colored=False),
            stat("Previous period", "Traffic of all current servers in the previous billing "
                 "period.",
                 [Query(f"sum by (direction) ({PREVIOUS})", "{{direction}}")], "bytes",
                 colored=False),
        ),

        row("Current and previous period"),
        *sized(
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
        ),

        row("Bandwidth"),
        *sized(
            12, 8,
            timeseries("Fleet bandwidth", "Traffic of all servers per second, per direction.",
                       [Query(f"sum by (direction) (rate({TRAFFIC}[$__rate_interval]))",
                              "{{direction}}")], "Bps"),
            timeseries("Top 10 servers by bandwidth",
                       "The ten server directions with the highest bandwidth at each moment.",
                       [Query(f"topk(10, rate({TRAFFIC}[$__rate_interval]))",
                              "{{hostname}} {{direction}}")], "Bps"),
        ),

        row("Forecast against quota"),
        *sized(
            12, 10,
            timeseries("Quota used and period elapsed",
                       "The ten server directions that have used the largest share of their "
                       "quota, against the share of the billing period that has passed (dashed): "
                       "a line above the dashed one is ahead of the pace the quota allows.",
                       [Query(f"topk(10, {QUOTA_USED})", "{{hostname}} {{direction}}"),
                        Query(f"max({ELAPSED})", "period elapsed")], "percentunit",
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
        ),
    ]
    # fmt: on
    return dashboard(
        "evotic-traffic",
        "Traffic and limits",
        "Traffic per billing period: this period against the previous one, bandwidth, and the "
        "forecast for the period end against the quota.",
        panels,
        time_from="now-7d",
    )


def exporter() -> model.Dashboard:
    # One series per account where an exporter serves several, each named "instance account".
    def each(metric: str) -> str:
        return named(once(sel(metric)))

    age = named(f"time() - {once(sel('evotic_last_successful_poll_timestamp_seconds'))}")
    scrapes = named(sel_shared("up"))
    buckets = f"rate({sel('evotic_api_request_duration_seconds_bucket')}[$__rate_interval])"
    quantiles = [
        Query(
            f"histogram_quantile({q}, sum by (le, endpoint) ({once(buckets)}))",
            f"{{{{endpoint}}}} p{round(q * 100)}",
        )
        for q in (0.5, 0.9, 0.99)
    ]
    # fmt: off
    panels: list[Item] = [
        row("Now"),
        *sized(
            4, 4,
            stat("API polls", "Whether the exporter's last poll of the Evotic API succeeded "
                 "(evotic_up), per account where an exporter serves several.",
                 [Query(each("evotic_up"), "{{source}}")], "none", mappings=POLL_OK),
            stat("Scrapes", "Whether Prometheus's last scrape of the exporter succeeded (up): "
                 "of /metrics, and of each account's /probe where an exporter serves several.",
                 [Query(scrapes, "{{source}}")], "none", mappings=SCRAPE_OK),
            stat("Data age", "Time since the last successful poll. At 10 minutes "
                 "(--poll.stale-after) the exporter stops serving server data.",
                 [Query(age, "{{source}}")], "s", thresholds=DATA_AGE),
            stat("Servers", "Servers exported (evotic_servers), those served from their last "
                 "valid record included.",
                 [Query(each("evotic_servers"), "{{source}}")], "short", colored=False),
            stat("Records set aside", "Server records the last successful poll set aside as "
                 "invalid or duplicates (set aside), and the exported servers served from their "
                 "last valid record because of it (kept).",
                 [Query(each("evotic_servers_rejected"), "{{source}} set aside"),
                  Query(each("evotic_servers_kept"), "{{source}} kept")], "short",
                 thresholds=steps(("orange", 1))),
            stat("Version", "The exporter's version.",
                 [Query(sel_shared("evotic_exporter_build_info"), "{{version}}")], "none",
                 show_name=True, colored=False),
        ),

        row("Polls"),
        *sized(
            12, 8,
            timeseries("Poll duration", "How long the last poll took, in total and per phase "
                       "(fetch, validate, status, render).",
                       [Query(each("evotic_poll_duration_seconds"), "{{source}} total"),
                        Query(each("evotic_poll_phase_duration_seconds"),
                              "{{source}} {{phase}}")], "s"),
            timeseries("Failed polls by reason", "Failed polls of the Evotic API per reason.",
                       [Query("sum by (reason) ("
                              + once(f"increase({sel('evotic_poll_errors_total')}"
                                     "[$__rate_interval])") + ")", "{{reason}}")],
                       "short", bars_=True),
            timeseries("Data age", "Time since the last successful poll; the line marks five "
                       "minutes, where EvoticDataStale starts to wait.",
                       [Query(age, "{{source}}")], "s", thresholds=steps(("red", 300)),
                       threshold_line=True),
            timeseries("Poll and scrape success", "1 while the last poll of the API (evotic_up) "
                       "and the last scrape by Prometheus (up) succeeded, 0 while they failed.",
                       [Query(each("evotic_up"), "{{source}} poll"),
                        Query(scrapes, "{{source}} scrape")], "none", maximum=1),
        ),

        row("Evotic API"),
        *sized(
            12, 8,
            timeseries("API requests by status code", "Requests to the Evotic API per second, by "
                       "endpoint and HTTP status code; 429 means rate-limited, timeout and "
                       "connection mean no answer came.",
                       [Query("sum by (endpoint, code) ("
                              + once(f"rate({sel('evotic_api_requests_total')}"
                                     "[$__rate_interval])") + ")", "{{endpoint}} {{code}}")],
                       "reqps", stack=True),
            timeseries("API request duration", "Median, 90th and 99th percentile of the duration "
                       "of Evotic API requests, by endpoint.", quantiles, "s"),
        ),

        row("Exporter process"),
        *sized(
            8, 8,
            timeseries("CPU", "CPU time the exporter process uses per second.",
                       [Query(f"rate({sel_shared('process_cpu_seconds_total')}"
                              "[$__rate_interval])", "{{instance}}")], "percentunit"),
            timeseries("Memory", "Resident memory of the exporter process.",
                       [Query(sel_shared("process_resident_memory_bytes"), "{{instance}}")],
                       "bytes"),
            timeseries("Scrape duration", "How long Prometheus's scrapes of the exporter take.",
                       [Query(named(sel_shared("scrape_duration_seconds")), "{{source}}")], "s"),
        ),
    ]
    # fmt: on
    return dashboard(
        "evotic-exporter",
        "Exporter health",
        "The exporter itself: its polls of the Evotic API, the API's answers, data age and "
        "the process.",
        panels,
    )


def build() -> dict[str, model.Dashboard]:
    """Every dashboard by file name."""
    return {
        "evotic-fleet.json": fleet(),
        "evotic-server.json": server(),
        "evotic-traffic.json": traffic(),
        "evotic-exporter.json": exporter(),
    }


def render(board: model.Dashboard) -> str:
    """The dashboard's JSON, as the SDK's encoder writes it."""
    return json.dumps(board, cls=JSONEncoder, indent=2, ensure_ascii=False) + "\n"


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
