"""The Evotic API: the httpx client (authentication, deadlines, the one retry policy, pagination),
the pydantic models of its answers, the errors that carry their fields, the rate budget, and how
the API is reached (proxies, CA files).

It may use only ``exporter.runtime``; nothing here knows of settings, polls or metrics.
"""
