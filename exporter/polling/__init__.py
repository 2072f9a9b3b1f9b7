"""Per account: fetch, validate and publish an immutable ``Snapshot`` with its ``Outcome``; the
health of an account as a pure function of outcome, snapshot and now.

It may use ``exporter.settings``, ``exporter.api`` and ``exporter.runtime``, and knows nothing of
metrics, HTTP or the other accounts.
"""
