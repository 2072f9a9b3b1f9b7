"""The commands besides the daemon: ``check`` (one listing call per account, and what it says),
``dashboards`` and ``rules`` (write the assets that ship with the exporter).

They may use every layer; ``exporter.cli`` dispatches to them by the first word.
"""
