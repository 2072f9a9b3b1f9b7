"""The README stays true: its tables are generated from the code, its commands are real.

``UPDATE_README=1 pytest tests/test_readme.py`` rewrites the generated tables in place.
"""

from __future__ import annotations

import os
import re

import pytest

from exporter.exposition.families import markdown_table
from exporter.settings.model import settings_table

from .processes import ROOT

README = ROOT / "README.md"


def _section(text: str, name: str) -> str:
    match = re.search(rf"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", text, re.S)
    assert match, f"README.md lacks the {name} markers"
    return match.group(1)


@pytest.mark.parametrize(("name", "generate"), [("metrics-table", markdown_table),
                                                 ("settings-table", settings_table)])  # fmt: skip
def test_generated_tables_are_current(name: str, generate) -> None:  # type: ignore[no-untyped-def]
    text = README.read_text(encoding="utf-8")
    expected = generate()
    if os.environ.get("UPDATE_README"):
        old = _section(text, name)
        text = text.replace(f"<!-- {name}:start -->\n{old}", f"<!-- {name}:start -->\n{expected}")
        README.write_text(text, encoding="utf-8")
    assert _section(text, name) == expected


def test_ci_runs_the_readme_test_command() -> None:
    text = README.read_text(encoding="utf-8")
    assert "bash tests/run.sh" in text
    assert "evotic-exporter --demo" in text
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "tests/run.sh" in ci
