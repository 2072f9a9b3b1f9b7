"""``python -m simulator`` runs the simulator's command line."""

from simulator.cli import main

raise SystemExit(main())
