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


def test_operation_profile_table_in_docs_matches_the_code() -> None:
    from autobot.operations import DEFAULT_PROFILES, PROFILE_FIELDS

    text = (DOCS / "operations.md").read_text()
    number = r" ([\d.]+) \|"
    rows = re.findall(r"^\| `([a-z_]+)` \|" + number * len(PROFILE_FIELDS) + "$", text, re.M)
    documented = {name: tuple(float(v) for v in values) for name, *values in rows}
    assert documented == {
        name: tuple(float(getattr(profile, f)) for f in PROFILE_FIELDS)
        for name, profile in DEFAULT_PROFILES.items()
    }
