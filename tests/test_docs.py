"""The documentation states what the code does."""

from __future__ import annotations

import pathlib
import re

from autobot import SCOPES

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"


def test_deadline_table_in_docs_matches_the_code() -> None:
    text = (DOCS / "deadlines.md").read_text()
    rows = re.findall(r"^\| `([a-z_.]+)` \| ([\d.]+) \| (.+?) \|$", text, re.MULTILINE)
    documented = {name: float(default) for name, default, _ in rows}
    assert documented == {spec.name: spec.default_s for spec in SCOPES}
