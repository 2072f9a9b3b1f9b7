"""What Prometheus reads: the one table of metric families, the per-server exposition rendered
once per snapshot (text, OpenMetrics, gzip), and the exporter's own metrics on prometheus_client.

It may use ``exporter.polling`` and the layers below it; it never calls the API.
"""
