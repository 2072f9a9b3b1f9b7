"""The per-server part of ``/metrics``, rendered once per poll and shared by every scrape.

The text format is rendered eagerly, in the poller's worker thread. OpenMetrics and the gzip
forms are built the first time a scrape asks for them, once per poll, off the event loop. Gzip
keeps a deflate stream open after the per-server part (a sync flush), so each scrape appends
only its small tail of exporter metrics: the client gets one valid gzip stream, and the
server compresses the large part once per poll instead of once per scrape.
"""

from __future__ import annotations

import asyncio
import zlib
from dataclasses import dataclass

from exporter.metrics import Format, render_families, server_samples
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


def compress_open(body: bytes) -> Compressed:
    stream = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
    head = stream.compress(body) + stream.flush(zlib.Z_SYNC_FLUSH)
    return Compressed(head, stream)


def _render(snapshot: Snapshot, fmt: Format) -> bytes:
    # Samples are rebuilt rather than kept: holding them would double the memory per poll.
    return render_families(server_samples(snapshot), fmt)


class Exposition:
    """The rendered per-server samples of one snapshot, in every form a scrape may ask for."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        families = server_samples(snapshot)
        self.series = sum(len(samples) for samples in families.values())
        self.text = render_families(families, "text")
        self._bodies: dict[Format, bytes] = {"text": self.text}
        self._compressed: dict[Format, Compressed] = {}
        self._lock = asyncio.Lock()

    async def body(self, fmt: Format) -> bytes:
        if fmt not in self._bodies:
            async with self._lock:
                if fmt not in self._bodies:
                    self._bodies[fmt] = await asyncio.to_thread(_render, self.snapshot, fmt)
        return self._bodies[fmt]

    async def compressed(self, fmt: Format) -> Compressed:
        if fmt not in self._compressed:
            body = await self.body(fmt)
            async with self._lock:
                if fmt not in self._compressed:
                    self._compressed[fmt] = await asyncio.to_thread(compress_open, body)
        return self._compressed[fmt]
