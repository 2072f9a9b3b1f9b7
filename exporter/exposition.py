"""The per-server part of ``/metrics``, rendered once per poll and shared by every scrape.

The text format is rendered eagerly, in the poller's worker thread. OpenMetrics and the gzip
forms are built the first time a scrape asks for them, once per poll, off the event loop.
OpenMetrics is the text body with its family headers swapped (the sample lines are the same),
a copy rather than a second rendering; its gzip form is compressed straight from the text
body's pieces, so Prometheus's usual request (OpenMetrics, gzip) adds two megabytes at 10,000
servers, not another body. Gzip keeps a deflate stream open after the per-server part (a sync
flush), so each scrape appends only its small tail of exporter metrics: the client gets one
valid gzip stream, and the server compresses the large part once per poll instead of once
per scrape.
"""

from __future__ import annotations

import asyncio
import io
import zlib
from dataclasses import dataclass

from exporter.metrics import (
    SNAPSHOT_METRICS,
    Format,
    openmetrics_from_text,
    openmetrics_parts,
    render_snapshot,
)
from exporter.snapshot import Snapshot

GZIP_LEVEL = 6
_GZIP_WBITS = 16 + zlib.MAX_WBITS


@dataclass(frozen=True)
class Compressed:
    """A gzip stream left open: ``head`` is sent as is; ``finish(tail)`` closes it."""

    head: bytes
    _state: zlib._Compress

    def finish(self, tail: bytes) -> bytes:
        stream = self._state.copy()
        return stream.compress(tail) + stream.flush(zlib.Z_FINISH)


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


class Exposition:
    """The rendered per-server samples of one snapshot, in every form a scrape may ask for."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.text = render_snapshot(snapshot, "text")
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
                    self._bodies[fmt] = await asyncio.to_thread(openmetrics_from_text, self.text)
        return self._bodies[fmt]

    async def compressed(self, fmt: Format) -> Compressed:
        if fmt not in self._compressed:
            async with self._lock:
                if fmt not in self._compressed:
                    parts = self._parts(fmt)
                    self._compressed[fmt] = await asyncio.to_thread(compress_open, *parts)
        return self._compressed[fmt]

    def _parts(self, fmt: Format) -> list[bytes | memoryview]:
        body = self._bodies.get(fmt)
        return [body] if body is not None else openmetrics_parts(self.text)
