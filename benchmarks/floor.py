"""The floor of the exporter's HTTP path: its own server, serving fixed bytes from a bare app.

``AsgiServer`` (Hypercorn with the exporter's limits and its ``Guard``) runs an ASGI app that
does nothing but send the bytes it was given: the gzip answer to a request that accepts gzip,
the plain one otherwise. No routing, negotiation, account or metrics. What a scrape of the
exporter costs above this is the exporter's own work; what this costs above nginx serving the
same bytes is the server's.

Usage: python benchmarks/floor.py PORT PLAIN_FILE GZIP_FILE
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.web.server import AsgiApp, AsgiServer, Receive, Scope, Send, bind_socket


def fixed_answers(plain: bytes, packed: bytes) -> AsgiApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        accepts = dict(scope["headers"]).get(b"accept-encoding", b"")
        gzip = b"gzip" in accepts
        body = packed if gzip else plain
        headers = [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8"),
                   (b"content-length", str(len(body)).encode())]  # fmt: skip
        if gzip:
            headers.append((b"content-encoding", b"gzip"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


async def main(port: int, plain: bytes, packed: bytes) -> None:
    server = AsgiServer(fixed_answers(plain, packed), bind_socket("127.0.0.1", port))
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), Path(sys.argv[2]).read_bytes(),
                     Path(sys.argv[3]).read_bytes()))  # fmt: skip
