"""The exposition cache: each snapshot rendered once, in every form a scrape may ask for.

``render_snapshot`` writes the per-server families of ``families.py`` straight from the
records, with each family's label order derived from its definition; ``tests/test_render.py``
holds it byte for byte to prometheus_client's renderer over the same readers.

The text format is rendered eagerly, in a worker thread, when the poller publishes a snapshot.
OpenMetrics and the gzip forms are built the first time a scrape asks for them, once per
snapshot, off the event loop. OpenMetrics is the text body with its family headers swapped (the
sample lines are the same), a copy rather than a second rendering; its gzip form is compressed
straight from the text body's pieces, so Prometheus's usual request (OpenMetrics, gzip) adds two
megabytes at 10,000 servers, not another body. Gzip keeps a deflate stream open after the
per-server part (a sync flush), so each scrape appends only its small tail of exporter metrics:
the client gets one valid gzip stream, and the large part is compressed once per snapshot
instead of once per scrape.
"""

from __future__ import annotations

import asyncio
import io
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, cast

from prometheus_client.utils import floatToGoString as _untyped_float_to_go_string

from exporter.api.models import Server, Traffic
from exporter.exposition.families import FLOWS, SNAPSHOT_METRICS, MetricDef, Sample, traffic_of
from exporter.polling.snapshot import Snapshot
from exporter.runtime.worker import Offload

Format = Literal["text", "openmetrics"]

# prometheus_client's own number formatting, so both renderers agree to the byte.
floatToGoString = cast(Callable[[float], str], _untyped_float_to_go_string)

GZIP_LEVEL = 6
_GZIP_WBITS = 16 + zlib.MAX_WBITS


# --------------------------------------------------------------------------- formatting


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str, fmt: Format) -> str:
    escaped = text.replace("\\", "\\\\").replace("\n", "\\n")
    return escaped.replace('"', '\\"') if fmt == "openmetrics" else escaped


def header(metric: MetricDef, fmt: Format) -> str:
    """A family's ``# HELP`` and ``# TYPE`` lines in either format."""
    name = metric.name if fmt == "text" else metric.family_name
    kind = "counter" if metric.kind == "counter" else "gauge"
    return f"# HELP {name} {_escape_help(metric.help, fmt)}\n# TYPE {name} {kind}\n"


# Go's exponent for 10^6 to 10^15, as prometheus_client writes it.
_EXPONENTS = tuple(f"e+{power:02d}" for power in range(16))


def go_float(value: float) -> str:
    """``floatToGoString(value)``, three times faster for the values a fleet has.

    Below 10^6, Python's ``repr`` is already Go's form. From 10^6 to 10^16 ``repr`` has no
    exponent yet and Go's has (``3.93080051e+09``): the digits are moved behind one point,
    trailing zeros dropped, as prometheus_client does. Anything else (negative, huge, not
    finite) takes prometheus_client's own path.
    """
    if 0.0 <= value < 1e6:
        return repr(value)
    if 1e6 <= value < 1e16:
        text = repr(float(value))  # an int has no point to move
        exponent = _EXPONENTS[text.find(".") - 1]
        digits = text.replace(".", "").rstrip("0")
        if len(digits) == 1:
            return digits + exponent
        return f"{digits[0]}.{digits[1:]}{exponent}"
    return floatToGoString(value)


# --------------------------------------------------------------------------- line templates

# What fills a slot of a sample line's template: the server's escaped ``hostname`` and
# ``server_id`` pair (when no other label sorts between the two), either one alone, or the
# n-th value of the family's own labels.
PAIR, HOST, ID = -1, -2, -3


@dataclass(frozen=True)
class Template:
    """A family's sample line as a ``%`` format: labels sorted by name, as prometheus_client
    writes them, then the value. ``slots`` says what fills each ``%s`` before the value.
    """

    text: str
    slots: tuple[int, ...]

    def writer(self) -> Callable[[str, str, str, str, tuple[str, ...], Callable[[str], str]], str]:
        """The template as one f-string function of ``(pair, host, id, value, labels, escape)``.

        Built from the template's own pieces and slots, so the label order is still the
        one ``template`` derived; a formatted string literal fills it several times faster
        than ``%`` with a tuple built per sample.
        """
        pieces = self.text.split("%s")
        names = {PAIR: "pair", HOST: "host", ID: "id_"}
        fields = [names.get(slot, f"escape(labels[{slot}])") for slot in self.slots]
        body = "".join(f"{{p{n}}}{{{field}}}" for n, field in enumerate([*fields, "value"]))
        source = "def line(pair, host, id_, value, labels, escape):\n"
        source += f'    return f"{body}{{p{len(fields) + 1}}}"\n'
        namespace: dict[str, object] = {f"p{n}": piece for n, piece in enumerate(pieces)}
        # The source holds names of our own making only; label values arrive as arguments.
        exec(compile(source, f"<{self.text.split('{')[0]}>", "exec"), namespace)  # noqa: S102
        return namespace["line"]  # type: ignore[return-value]


def template(metric: MetricDef) -> Template:
    names = sorted(metric.all_labels)
    parts: list[str] = []
    slots: list[int] = []
    i = 0
    while i < len(names):
        name = names[i]
        if name == "hostname" and names[i + 1 : i + 2] == ["server_id"]:
            parts.append("%s")
            slots.append(PAIR)
            i += 2
            continue
        parts.append(f'{name}="%s"')
        slots.append(
            HOST if name == "hostname" else ID if name == "server_id" else metric.labels.index(name)
        )
        i += 1
    labels = "{" + ",".join(parts) + "}" if parts else ""
    return Template(f"{metric.name}{labels} %s\n", tuple(slots))


TEMPLATES: dict[MetricDef, Template] = {metric: template(metric) for metric in SNAPSHOT_METRICS}
WRITERS = {shape: shape.writer() for shape in TEMPLATES.values()}


class _Numbers(dict[float, str]):
    """Formatted values of one rendering; quotas and the 1s of info series repeat. Never
    asked for zero, whose sign a dictionary would not keep apart (-0.0 == 0.0)."""

    def __missing__(self, value: float) -> str:
        text = self[value] = go_float(value)
        return text


class _Escaped(dict[str, str]):
    """Escaped label values, each escaped once per rendering (nodes, systems and statuses
    repeat across thousands of servers)."""

    def __missing__(self, value: str) -> str:
        escaped = self[value] = escape_label(value)
        return escaped


class _Lines:
    """The sample lines of one snapshot, family by family and a batch of servers at a time.

    Each server's escaped ``hostname="…",server_id="…"`` pair is made once and shared by
    every family whose template has it as one slot.
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.servers = snapshot.servers
        self.hosts = [escape_label(server.hostname) for server in self.servers]
        self.ids = [escape_label(server.id) for server in self.servers]
        self.pairs = [
            f'hostname="{host}",server_id="{id_}"'
            for host, id_ in zip(self.hosts, self.ids, strict=True)
        ]
        self.escaped = _Escaped()
        self.numbers = _Numbers()
        self._traffic: list[Traffic | None] | None = None

    def for_family(self, metric: MetricDef, start: int, stop: int) -> list[str]:
        """The lines of ``metric`` for servers ``start`` to ``stop``, in server order; a
        family of the snapshot as a whole comes with the first batch."""
        shape = TEMPLATES[metric]
        if metric.scalar is not None:
            value = metric.scalar(self.snapshot)
            return [] if value is None or start > 0 else [shape.text % go_float(value)]
        batch = slice(start, stop)
        if metric.value is not None:
            return self._values(shape, batch, metric.value)
        if metric.flow is not None:
            return self._flows(shape, batch, metric.flow)
        if metric.samples is not None:
            return self._samples(shape, batch, metric.samples)
        raise ValueError(f"{metric.name} has no reader")

    def _values(
        self, shape: Template, batch: slice, value_of: Callable[[Server], float | None]
    ) -> list[str]:
        # The template is name{%s} %s: an f-string of its pieces is the fastest way to fill it.
        head, middle, tail = shape.text.split("%s")
        lines = []
        for server, pair in zip(self.servers[batch], self.pairs[batch], strict=True):
            value = value_of(server)
            if value is not None:
                lines.append(f"{head}{pair}{middle}{go_float(value)}{tail}")
        return lines

    def _flows(
        self, shape: Template, batch: slice, value_of: Callable[..., float | None]
    ) -> list[str]:
        # One list of references shared by the traffic families; no tuple or list per server,
        # which at 50,000 servers would wake the garbage collector dozens of times.
        if self._traffic is None:
            self._traffic = [traffic_of(server) for server in self.servers]
        # Per direction, what comes before and after the server's pair, label order kept.
        first, second, third, tail = shape.text.split("%s")
        direction_first = shape.slots == (0, PAIR)
        around = [
            (first + direction + second, third) if direction_first
            else (first, second + direction + third)
            for direction, _ in FLOWS
        ]  # fmt: skip
        readers = [flow_of for _, flow_of in FLOWS]
        lines = []
        for traffic, pair in zip(self._traffic[batch], self.pairs[batch], strict=True):
            if traffic is None:
                continue
            for flow_of, (before, after) in zip(readers, around, strict=True):
                flow = flow_of(traffic)
                if flow is None:
                    continue
                value = value_of(flow)
                if value is not None:
                    lines.append(f"{before}{pair}{after}{go_float(value)}{tail}")
        return lines

    def _samples(
        self, shape: Template, batch: slice, read: Callable[[Server, Snapshot], Iterable[Sample]]
    ) -> list[str]:
        snapshot, line = self.snapshot, WRITERS[shape]
        escape, numbers = self.escaped.__getitem__, self.numbers
        lines = []
        rows = zip(self.servers[batch], self.pairs[batch], self.hosts[batch], self.ids[batch],
                   strict=True)  # fmt: skip
        for server, pair, host, id_ in rows:
            for values, value in read(server, snapshot):
                number = numbers[value] if value else go_float(value)
                lines.append(line(pair, host, id_, number, values, escape))
        return lines


# Servers per piece of a family: bounds the lines (and their joined text) alive at once to
# a few hundred kilobytes, whatever the size of the fleet (2 MB less at the peak of a poll
# of 10,000 servers than batches of 5,000, and no slower).
BATCH = 1000


def render_snapshot(snapshot: Snapshot, fmt: Format, batch: int = BATCH) -> bytes:
    """Every per-server family of ``snapshot`` in the text format (0.0.4) or OpenMetrics 1.0
    (without ``# EOF``), as prometheus_client would write them.

    No sample tuples are built where a family's reader gives a value per server or direction:
    lines are written straight from the records, a family and a batch of servers at a time,
    and encoded and appended at once. ``BytesIO.getvalue()`` hands over its buffer without
    copying it, so the body exists once, not twice, at the end.
    """
    lines = _Lines(snapshot)
    out = io.BytesIO()
    batches = range(0, max(len(snapshot.servers), 1), batch)
    for metric in SNAPSHOT_METRICS:
        out.write(header(metric, fmt).encode("utf-8"))
        for start in batches:
            piece = "".join(lines.for_family(metric, start, start + batch))
            out.write(piece.encode("utf-8"))
            del piece
    return out.getvalue()


def openmetrics_parts(text: bytes) -> list[bytes | memoryview]:
    """The OpenMetrics form of a ``render_snapshot(snapshot, "text")`` body, in pieces.

    Sample lines are the same in both formats; only the family headers differ (counters lose
    ``_total``, quotes in help texts are escaped). The pieces are views of ``text`` between
    the swapped headers, so a consumer that streams them (gzip) never holds a second copy.
    Each text header is found in turn: it cannot occur inside a sample line, because a
    header holds a raw newline followed by ``# TYPE`` and a sample line's only raw newline
    is its last byte.
    """
    view = memoryview(text)
    parts: list[bytes | memoryview] = []
    position = 0
    for metric in SNAPSHOT_METRICS:
        text_header = header(metric, "text").encode("utf-8")
        start = text.index(text_header, position)
        parts += (view[position:start], header(metric, "openmetrics").encode("utf-8"))
        position = start + len(text_header)
    parts.append(view[position:])
    return parts


def openmetrics_from_text(text: bytes) -> bytes:
    """The OpenMetrics body for a text body: ``openmetrics_parts`` joined."""
    return b"".join(openmetrics_parts(text))


# --------------------------------------------------------------------------- gzip


class Compressed:
    """A gzip stream left open: ``head`` is sent as is; ``finish(tail)`` closes it.

    The last ending is kept with its tail: between two changes of an account's own metrics,
    scrapes bring the same tail (the same bytes object) and compress nothing.
    """

    __slots__ = ("_ending", "_state", "_tail", "head")

    def __init__(self, head: bytes, state: zlib._Compress) -> None:
        self.head = head
        self._state = state
        self._tail: bytes | None = None
        self._ending = b""

    def finish(self, tail: bytes) -> bytes:
        if tail is not self._tail:
            stream = self._state.copy()
            self._ending = stream.compress(tail) + stream.flush(zlib.Z_FINISH)
            self._tail = tail
        return self._ending


# Input fed to the compressor at a time, so that its output comes in pieces too.
_COMPRESS_PIECE = 1 << 20


def compress_open(*parts: bytes | memoryview) -> Compressed:
    """Compress ``parts`` into a gzip stream that ``Compressed.finish`` can still extend.

    The output is collected in a ``BytesIO``, whose ``getvalue()`` hands over its buffer:
    the compressed body is not joined from pieces into a second copy.
    """
    stream = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
    head = io.BytesIO()
    for part in parts:
        view = memoryview(part)
        for start in range(0, len(view), _COMPRESS_PIECE):
            head.write(stream.compress(view[start : start + _COMPRESS_PIECE]))
    head.write(stream.flush(zlib.Z_SYNC_FLUSH))
    return Compressed(head.getvalue(), stream)


# --------------------------------------------------------------------------- the cache


class Exposition:
    """The rendered per-server samples of one snapshot, in every form a scrape may ask for.

    It keeps bytes only, not the snapshot: the records are the poller's to keep or drop.
    """

    def __init__(self, snapshot: Snapshot, offload: Offload = asyncio.to_thread) -> None:
        self.text = render_snapshot(snapshot, "text")
        self._offload = offload
        self._bodies: dict[Format, bytes] = {"text": self.text}
        self._compressed: dict[Format, Compressed] = {}
        self._lock = asyncio.Lock()

    @property
    def series(self) -> int:
        """Samples in the body: every line but the two header lines of each family."""
        return self.text.count(b"\n") - 2 * len(SNAPSHOT_METRICS)

    async def body(self, fmt: Format) -> bytes:
        if fmt not in self._bodies:
            async with self._lock:
                if fmt not in self._bodies:
                    self._bodies[fmt] = await self._offload(openmetrics_from_text, self.text)
        return self._bodies[fmt]

    async def compressed(self, fmt: Format) -> Compressed:
        if fmt not in self._compressed:
            async with self._lock:
                if fmt not in self._compressed:
                    parts = self._parts(fmt)
                    self._compressed[fmt] = await self._offload(compress_open, *parts)
        return self._compressed[fmt]

    def _parts(self, fmt: Format) -> list[bytes | memoryview]:
        body = self._bodies.get(fmt)
        return [body] if body is not None else openmetrics_parts(self.text)


_NOTHING = Snapshot(servers=(), taken_at=0.0)


class ExpositionCache:
    """One account's current rendering: ``update`` renders a new snapshot once, ``get`` serves.

    ``on_render`` is told how long each rendering took (``evotic_poll_phase_duration_seconds``
    with ``phase="render"``); ``offload`` runs the rendering and the forms built on demand.
    """

    def __init__(
        self,
        on_render: Callable[[float], None] = lambda seconds: None,
        offload: Offload = asyncio.to_thread,
    ) -> None:
        self._on_render = on_render
        self._offload = offload
        self._snapshot: Snapshot | None = None
        self._empty = Exposition(_NOTHING)  # the family headers alone
        self._exposition = self._empty

    async def update(self, snapshot: Snapshot | None) -> None:
        """Render ``snapshot`` unless it is the one rendered last; off the event loop."""
        if snapshot is None or snapshot is self._snapshot:
            return
        started = time.perf_counter()
        exposition = await self._offload(Exposition, snapshot, self._offload)
        self._snapshot, self._exposition = snapshot, exposition
        self._on_render(time.perf_counter() - started)

    def get(self, snapshot: Snapshot | None) -> Exposition:
        """The rendering of ``snapshot``; the headers alone for ``None`` (nothing to serve)."""
        if snapshot is not None and snapshot is self._snapshot:
            return self._exposition
        return self._empty
