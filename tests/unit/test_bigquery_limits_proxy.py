"""The write-limits double's reading of statements (no emulator): which statements it limits and on
which table; its behaviour against the emulator is in tests/integration/test_bigquery_limits_proxy.py."""

from __future__ import annotations

import pytest

from bigquery_limits_proxy import Statement, dml_statements, split_statements


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("UPDATE `p.d.t` SET a = 1 WHERE TRUE", [Statement("UPDATE", "p.d.t")]),
        ("update `p`.`d`.`t` set a = 1 where true", [Statement("UPDATE", "p.d.t")]),
        ("DELETE FROM d.t WHERE TRUE", [Statement("DELETE", "job-project.d.t")]),
        ("DELETE d.t WHERE TRUE", [Statement("DELETE", "job-project.d.t")]),
        (
            "MERGE INTO `my-proj.d.t` t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = 1",
            [Statement("MERGE", "my-proj.d.t")],
        ),
        ("MERGE t USING s ON TRUE WHEN MATCHED THEN DELETE", [Statement("MERGE", "dp.dd.t")]),
        ("INSERT INTO `p.d.t` (a) SELECT a FROM `p.d.u`", [Statement("INSERT", "p.d.t")]),
        ("-- UPDATE `p.d.x` SET a = 1\n/* DELETE FROM p.d.y */ SELECT 'UPDATE p.d.z'", []),
        ("SELECT 1; UPDATE `p.d.t` SET s = 'a;b' WHERE TRUE;", [Statement("UPDATE", "p.d.t")]),
        ("SELECT * FROM `p.d.t` WHERE name = 'DELETE FROM p.d.t'", []),
    ],
)
def test_dml_statements_name_the_verb_and_the_fully_qualified_table(sql, expected):
    assert dml_statements(sql, "job-project", {"projectId": "dp", "datasetId": "dd"} if "MERGE t" in sql else None) == (
        expected
    )


def test_only_update_delete_and_merge_are_mutating():
    assert [Statement(v, "p.d.t").mutating for v in ("UPDATE", "DELETE", "MERGE", "INSERT")] == [
        True,
        True,
        True,
        False,
    ]


def test_split_statements_keeps_semicolons_in_strings_and_drops_comments():
    assert split_statements("SELECT ';' -- x; y\n; # z;\nSELECT `a;b`") == ["SELECT ';'", "SELECT `a;b`"]
