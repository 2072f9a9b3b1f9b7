"""The dashboards and rules that ship in the package, and the commands that write them.

The copies under ``exporter/assets/`` are held byte-equal to ``grafana/dashboards/`` and
``deploy/prometheus/rules/``; ``UPDATE_ASSETS=1 pytest tests/test_assets.py`` copies them again.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.cli import main as cli_main
from exporter.commands.assets import (
    KINDS,
    AssetKind,
    AssetsExist,
    main,
    shipped_files,
    write_assets,
)
from exporter.settings.loading import PROG

from .processes import ROOT

ASSETS = ROOT / "exporter" / "assets"
SOURCES = {
    "dashboards": ROOT / "grafana" / "dashboards",
    "rules": ROOT / "deploy" / "prometheus" / "rules",
}


def _sources(kind: AssetKind) -> dict[str, bytes]:
    """The repository's own files of ``kind``, by name."""
    paths = sorted(SOURCES[kind.command].glob(kind.pattern))
    return {path.name: path.read_bytes() for path in paths}


def _written(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.mark.parametrize("command", sorted(KINDS))
def test_the_package_holds_the_repositorys_files_byte_for_byte(command: str) -> None:
    kind = KINDS[command]
    sources = _sources(kind)
    copies = ASSETS / kind.folder
    if os.environ.get("UPDATE_ASSETS"):
        copies.mkdir(parents=True, exist_ok=True)
        for stale in copies.iterdir():
            if stale.name not in sources:
                stale.unlink()
        for name, data in sources.items():
            (copies / name).write_bytes(data)
    assert sources, f"no {kind.pattern} in {SOURCES[command]}"
    assert _written(copies) == sources, (
        "stale copies: run UPDATE_ASSETS=1 pytest tests/test_assets.py"
    )
    assert shipped_files(kind) == sources


def test_the_rule_tests_stay_out_of_the_package() -> None:
    tests = sorted(SOURCES["rules"].glob("*.test.yml"))
    assert tests, "the rules have promtool tests beside them"
    assert not any(name.endswith(".test.yml") for name in shipped_files(KINDS["rules"]))


def test_write_creates_the_folder_and_writes_every_file(tmp_path: Path) -> None:
    assets = shipped_files(KINDS["dashboards"])
    output = tmp_path / "a" / "b"
    written = write_assets(assets, output, force=False)
    assert written == [output / name for name in assets]
    assert _written(output) == assets


def test_write_refuses_to_overwrite_and_then_writes_nothing(tmp_path: Path) -> None:
    assets = shipped_files(KINDS["rules"])
    first, *others = assets
    (tmp_path / first).write_bytes(b"my own edits\n")
    with pytest.raises(AssetsExist) as refused:
        write_assets(assets, tmp_path, force=False)
    assert refused.value.paths == (tmp_path / first,)
    assert _written(tmp_path) == {first: b"my own edits\n"}
    assert others

    write_assets(assets, tmp_path, force=True)
    assert _written(tmp_path) == assets


def test_force_replaces_a_link_never_the_file_it_points_to(tmp_path: Path) -> None:
    assets = shipped_files(KINDS["rules"])
    first = next(iter(assets))
    elsewhere = tmp_path / "elsewhere.yml"
    elsewhere.write_bytes(b"not to be touched\n")
    output = tmp_path / "out"
    output.mkdir()
    (output / first).symlink_to(elsewhere)
    with pytest.raises(AssetsExist):
        write_assets(assets, output, force=False)
    dangling = output / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(AssetsExist):
        write_assets({"dangling": b"x"}, output, force=False)

    write_assets(assets, output, force=True)
    assert not (output / first).is_symlink()
    assert (output / first).read_bytes() == assets[first]
    assert elsewhere.read_bytes() == b"not to be touched\n"


def test_commands_exit_0_1_and_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "dashboards"
    assert cli_main(["dashboards", "--output", str(output)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        f"wrote {output / name}" for name in shipped_files(KINDS["dashboards"])
    ]
    assert _written(output) == _sources(KINDS["dashboards"])

    assert main("dashboards", ["--output", str(output)]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert err.startswith(f"{PROG} dashboards: not overwriting {output}/")
    assert err.rstrip().endswith("(--force replaces them); nothing written")
    for name in shipped_files(KINDS["dashboards"]):
        assert str(output / name) in err

    assert main("dashboards", ["--output", str(output), "--force"]) == 0
    capsys.readouterr()

    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert main("rules", ["--output", str(blocked / "rules")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{PROG} rules: cannot write {blocked}")

    for argv in ([], ["--output"], ["--output", str(output), "--bogus"]):
        with pytest.raises(SystemExit) as exited:
            main("rules", argv)
        assert exited.value.code == 2
        assert capsys.readouterr().err.startswith(f"{PROG}: ")

    with pytest.raises(SystemExit) as exited:
        cli_main(["rules", "--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {PROG} rules [-h] --output DIR [--force]")


# ------------------------------------------------------------------ as a process


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("EVOTIC_")}
    return subprocess.run([sys.executable, "-m", "exporter", *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


@pytest.mark.e2e
@pytest.mark.parametrize("command", sorted(KINDS))
def test_process_writes_the_repositorys_files_and_refuses_to_overwrite(
    command: str, tmp_path: Path
) -> None:
    expected = _sources(KINDS[command])
    output = tmp_path / "new" / command
    written = _run(command, "--output", str(output))
    assert written.returncode == 0, written.stderr
    assert _written(output) == expected
    assert written.stdout.splitlines() == [f"wrote {output / name}" for name in expected]

    edited = output / next(iter(expected))
    edited.write_bytes(b"edited\n")
    refused = _run(command, "--output", str(output))
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert str(edited) in refused.stderr
    assert edited.read_bytes() == b"edited\n"

    forced = _run(command, "--output", str(output), "--force")
    assert forced.returncode == 0, forced.stderr
    assert _written(output) == expected
