"""The exporter wired together: an account (client, poller, cache, metrics), the set of running
accounts, reloads, and ``Service``, the one object the daemon starts, reloads and stops.

It may use every layer below it; only ``exporter.commands`` and ``exporter.cli`` use it.
"""
