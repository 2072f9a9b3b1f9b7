"""The ``evotic-exporter`` command: parse the command line, build the service, run it.

Exit codes: 0 after SIGTERM/SIGINT, 2 for invalid settings (one line on stderr, no traceback),
1 when the listen address cannot be bound.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from exporter.api.network import ProxySettingError
from exporter.runtime.allocator import tune_allocator
from exporter.service.daemon import Service
from exporter.service.reload import Files
from exporter.settings.loading import PROG, load
from exporter.settings.model import SettingsError
from exporter.web.config import load_web

# The first word of the command line that runs a command instead of the exporter.
COMMANDS = ("check", "dashboards", "rules")


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words and words[0] in COMMANDS:
        # The daemon has no need of the commands' modules.
        from exporter.commands import assets, check

        return check.main(words[1:]) if words[0] == "check" else assets.main(words[0], words[1:])
    tune_allocator()
    try:
        loaded = load(argv)
        files = Files(loaded.accounts, load_web(loaded.settings))
    except (SettingsError, ProxySettingError) as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    return asyncio.run(Service(loaded.settings, files).run())
