"""``evotic-exporter dashboards`` and ``evotic-exporter rules``: the files that ship in the package.

A pip or Docker install has no checkout, so the Grafana dashboards (``grafana/dashboards/``)
and the Prometheus rule files (``deploy/prometheus/rules/*.rules.yml``) ship inside the package,
under ``exporter/assets/``, byte for byte (``tests/test_assets.py`` holds the copies equal).
Their promtool tests (``*.test.yml``) stay in the repository: a Prometheus that loads every
``*.yml`` of a rules folder would take them for rule files and refuse to start.

Both commands write into ``--output DIR`` (created if missing). When any of the files is there
already, they write nothing at all and name it, unless given ``--force``.
"""

from __future__ import annotations

import fnmatch
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TextIO

from exporter import __version__
from exporter.settings.loading import PROG, Parser


@dataclass(frozen=True)
class AssetKind:
    """One command's files: where they lie in the package, which names, and what they are."""

    command: str
    folder: str
    pattern: str
    what: str


KINDS: Mapping[str, AssetKind] = {
    kind.command: kind
    for kind in (
        AssetKind("dashboards", "dashboards", "*.json", "the Grafana dashboards"),
        AssetKind("rules", "rules", "*.rules.yml", "the Prometheus alerting and recording rules"),
    )
}


def shipped_files(kind: AssetKind) -> dict[str, bytes]:
    """The files of ``kind`` that ship in the package, by name, in name order."""
    folder = files("exporter").joinpath("assets", kind.folder)
    found = {
        entry.name: entry.read_bytes()
        for entry in folder.iterdir()
        if entry.is_file() and fnmatch.fnmatchcase(entry.name, kind.pattern)
    }
    return dict(sorted(found.items()))


class AssetsExist(Exception):
    """Files that are there already and would be overwritten; ``paths`` names them."""

    def __init__(self, paths: Sequence[Path]) -> None:
        super().__init__(paths)
        self.paths = tuple(paths)


def write_assets(assets: Mapping[str, bytes], output: Path, *, force: bool) -> list[Path]:
    """Write every file into ``output``; ``AssetsExist`` before writing any, unless ``force``.

    Raises ``OSError`` when the folder or a file cannot be written.
    """
    targets = {output / name: data for name, data in assets.items()}
    # is_symlink(): a dangling link is there too, and writing through it would go elsewhere.
    existing = [path for path in targets if path.exists() or path.is_symlink()]
    if existing and not force:
        raise AssetsExist(existing)
    output.mkdir(parents=True, exist_ok=True)
    for path, data in targets.items():
        if path.is_symlink():
            path.unlink()  # --force replaces the link itself, never the file it points to
        path.write_bytes(data)
    return list(targets)


def build_parser(kind: AssetKind) -> Parser:
    description = f"Write {kind.what} that ship with the exporter into a folder."
    parser = Parser(prog=f"{PROG} {kind.command}", description=description)
    parser.add_argument("--output", metavar="DIR", type=Path, required=True,
                        help="the folder to write into; created if missing")  # fmt: skip
    parser.add_argument("--force", action="store_true",
                        help="overwrite files that are there already")  # fmt: skip
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return parser


def main(command: str, argv: Sequence[str], stdout: TextIO | None = None) -> int:
    """``evotic-exporter dashboards|rules --output DIR [--force]``; returns the exit code:
    0 written, 1 not written (a file is there already, or cannot be written), 2 bad usage."""
    kind = KINDS[command]
    args = build_parser(kind).parse_args(argv)
    try:
        written = write_assets(shipped_files(kind), args.output, force=args.force)
    except AssetsExist as exists:
        names = ", ".join(str(path) for path in exists.paths)
        print(f"{PROG} {command}: not overwriting {names} (--force replaces them); "
              "nothing written", file=sys.stderr)  # fmt: skip
        return 1
    except OSError as error:
        where = f" {error.filename}" if error.filename else ""
        print(f"{PROG} {command}: cannot write{where}: {error.strerror}", file=sys.stderr)
        return 1
    out = stdout or sys.stdout
    for path in written:
        out.write(f"wrote {path}\n")
    return 0
