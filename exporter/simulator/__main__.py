"""``python -m exporter.simulator`` runs the simulator's command line."""

from exporter.simulator.cli import main

raise SystemExit(main())
