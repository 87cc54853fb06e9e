"""docs/configuration.md's table of settings matches the settings code, so it cannot drift."""

from __future__ import annotations

import pathlib
import re
import tomllib
from dataclasses import fields

import pytest

from autobot import SCOPES, ConfigError, Settings, load_settings
from autobot._config import _FIELDS
from autobot._operation_profile import PROFILE_FIELDS

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
_CODE = re.compile(r"`([^`]*)`")


def _rows() -> list[list[str]]:
    """The cells of the table under "Every setting" (header and rule left out)."""
    section = DOC.read_text().split("## Every setting", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| variable | TOML key | default | meaning |")
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]


def _code(cell: str) -> str | None:
    """The cell's first `code` span, or None for "(none)" and "unset"-like prose."""
    match = _CODE.search(cell)
    return match.group(1) if match else None


ROWS = _rows()
BY_VARIABLE = {_code(row[0]): row for row in ROWS if _code(row[0])}
SETTINGS = {row[1].strip("`"): row for row in ROWS if re.fullmatch(r"`[a-z_]+`", row[1])}


def test_every_setting_has_a_row_and_every_row_is_a_setting() -> None:
    assert all(len(row) == 4 for row in ROWS), [row for row in ROWS if len(row) != 4]
    assert set(SETTINGS) == set(_FIELDS)
    assert {f.name for f in fields(Settings)} == set(_FIELDS) | {"deadlines", "operation_profiles"}
    for key, row in SETTINGS.items():
        assert _code(row[0]) == f"AUTOBOT_{key.upper()}", row
    special = {_code(row[0]) for row in ROWS} - {f"AUTOBOT_{key.upper()}" for key in _FIELDS}
    assert special == {"AUTOBOT_CONFIG", "AUTOBOT_DEADLINE_<SCOPE>", None}


@pytest.mark.parametrize("key", sorted(_FIELDS))
def test_each_documented_default_is_the_code_default(key: str) -> None:
    default = getattr(Settings(), key)
    cell = SETTINGS[key][2]
    if cell == "unset":
        assert default in (None, ()), f"{key}: documented unset, code default {default!r}"
        return
    documented = _code(cell)
    assert documented is not None, f"{key}: default cell {cell!r} holds no `value`"
    assert _FIELDS[key](documented) == default, f"{key}: {documented!r} vs {default!r}"
    # And the documented value is accepted where an operator would write it.
    assert getattr(load_settings({f"AUTOBOT_{key.upper()}": documented}), key) == default


def test_the_deadline_rule_is_the_code_rule() -> None:
    row = BY_VARIABLE["AUTOBOT_DEADLINE_<SCOPE>"]
    assert row[1] == "`[deadlines]` table"
    example = re.search(r"`(\w+\.\w+)` → `(AUTOBOT_DEADLINE_\w+)`", row[3])
    assert example is not None, row[3]
    scope, variable = example.groups()
    assert {spec.name: spec.env_var for spec in SCOPES}[scope] == variable
    for spec in SCOPES:
        assert spec.env_var == "AUTOBOT_DEADLINE_" + spec.name.upper().replace(".", "_")
    assert load_settings({variable: "61"}).deadlines == {scope: 61.0}


def test_the_operations_tables_name_every_profile_field() -> None:
    (row,) = [row for row in ROWS if row[1] == "`[operations.<type>]` tables"]
    assert tuple(_CODE.findall(row[3])) == PROFILE_FIELDS


def test_the_example_file_loads(tmp_path: pathlib.Path) -> None:
    text = DOC.read_text()
    example = text.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "autobot.toml"
    path.write_text(example)
    settings = load_settings({"AUTOBOT_CONFIG": str(path)})
    parsed = tomllib.loads(example)
    assert settings.deadlines == parsed["deadlines"]
    assert dict(settings.operation_profiles) == parsed["operations"]
    for key in set(parsed) - {"deadlines", "operations"}:
        assert key in _FIELDS


def test_the_documented_error_line_is_what_the_loader_says() -> None:
    assert "error: AUTOBOT_PORT: 'abc' is not a port number" in DOC.read_text()
    with pytest.raises(ConfigError) as caught:
        load_settings({"AUTOBOT_PORT": "abc"})
    assert str(caught.value) == "AUTOBOT_PORT: 'abc' is not a port number"
