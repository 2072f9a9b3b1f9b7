"""The HTTP side: the ASGI app (routes, content negotiation, basic auth), the HTTP server on
Hypercorn's public API, the web configuration file (TLS, users, headers) and the certificates that
follow their files.

It serves what the layers below rendered and never waits for the API; it may use
``exporter.exposition`` and everything below it, and knows accounts only as ``web.app.Target``.
"""
