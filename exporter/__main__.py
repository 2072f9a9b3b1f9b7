"""``python -m exporter`` runs the exporter's command line."""

from exporter.cli import main

raise SystemExit(main())
