"""evotic-exporter: a Prometheus exporter for servers hosted at Evotic."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("evotic-exporter")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
