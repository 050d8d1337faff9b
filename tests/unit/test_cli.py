"""cli.py: the commands as a user runs them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from customer_pipelines import cli


def test_validate_prints_each_hostile_row_on_one_line(
    write_snap, demo_customers, demo_configs, tmp_path: Path, monkeypatch, capsys
):
    template: dict[str, Any] = demo_configs[0]
    hostile = [
        {**template, "config_id": "cfg\nline2", "customer_id": "cust\x1b[31m"},
        {**template, "config_id": "cfg_tz", "timezone": "UTC\t" + "z" * 1_000_000},
    ]
    monkeypatch.setenv("CP_SNAPSHOT_PATH", str(write_snap(demo_customers, [*demo_configs, *hostile])))
    monkeypatch.setenv("CP_STATE_DIR", str(tmp_path / "state"))

    assert cli.main(["validate"]) == 1

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("2 customer pipeline problem(s)")
    assert len(lines) == 3, lines
    assert all(line.isprintable() and len(line) < 2_000 for line in lines)
    assert lines[1].startswith("- config 'cfg\\nline2' (customer 'cust\\x1b[31m'): ")
