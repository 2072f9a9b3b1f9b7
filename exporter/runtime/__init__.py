"""What every layer may use and that knows nothing of the exporter's data: the log set-up with its
token redactor, the worker thread that validates and renders, and the allocator's tuning.

It imports nothing else of ``exporter``.
"""
