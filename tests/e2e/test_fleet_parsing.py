"""Change-driven parsing on the real stack: a refresh that changes nothing asks for no parse and, even
when every shard is parsed again, writes no new DAG version; an edit of one config in BigQuery asks
for its shard's parse only and adds exactly one version, to that DAG alone."""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from customer_pipelines.bigquery.store import BigQueryStore
from customer_pipelines.fleet.parsing import DEFAULT_BUNDLE, PERIODIC_REPARSE_SECONDS
from customer_pipelines.fleet.shards import SHARD_DIR, shard_file, shard_of
from customer_pipelines.local.airflow_api import AirflowAPIError
from customer_pipelines.local.stack import run_module
from tests_support import add_customer, rows_of_customer

pytestmark = pytest.mark.e2e

CUSTOMER = "cust_parse_on_change"


def _metadata(info: Any) -> Any:
    import psycopg2

    url = info.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("postgresql+psycopg2://", "postgresql://")
    conn = psycopg2.connect(url)
    conn.autocommit = True
    return conn


def _fleet_state(conn: Any) -> tuple[dict[str, int], dict[str, str]]:
    """(dag_id -> dag_version rows, dag_id -> the serialized DAG's hash) of every fleet DAG."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT d.dag_id, count(v.id) FROM dag d JOIN dag_version v USING (dag_id)"
            " WHERE d.relative_fileloc LIKE %s GROUP BY d.dag_id",
            (f"{SHARD_DIR}/%",),
        )
        versions = dict(cur.fetchall())
        cur.execute(
            "SELECT DISTINCT ON (s.dag_id) s.dag_id, s.dag_hash FROM serialized_dag s JOIN dag d USING (dag_id)"
            " WHERE d.relative_fileloc LIKE %s ORDER BY s.dag_id, s.last_updated DESC",
            (f"{SHARD_DIR}/%",),
        )
        return versions, dict(cur.fetchall())


def _parsed_at(conn: Any) -> dict[str, datetime]:
    """shard file -> when the DAG processor last parsed it (its DAGs' last_parsed_time)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT relative_fileloc, max(last_parsed_time) FROM dag"
            " WHERE relative_fileloc LIKE %s AND NOT is_stale GROUP BY 1",
            (f"{SHARD_DIR}/%",),
        )
        return dict(cur.fetchall())


def _wait(condition: Callable[[], bool], what: str, timeout: float = 120) -> float:
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"{what} not within {timeout:.0f}s")
        time.sleep(1)
    return time.monotonic() - began


def _files_asked(sync_output: str) -> int:
    found = re.search(r"parse asked for (\d+) file", sync_output)
    assert found, sync_output
    return int(found.group(1))


def _parses_not_asked_for(before: dict[str, datetime], after: dict[str, datetime], asked: set[str]) -> set[str]:
    """Shard files parsed again though nobody asked, and not due by the DAG processor's own timer."""
    now = datetime.now(UTC)
    return {
        file
        for file, parsed in after.items()
        if file not in asked
        and parsed != before.get(file)
        and before.get(file) is not None
        and before[file] + timedelta(seconds=PERIODIC_REPARSE_SECONDS) > now
    }


def test_a_no_op_refresh_writes_no_version_and_an_edit_versions_its_dag_only(stack):
    info, client = stack
    shards = info.settings.fleet_shards
    dag_ids = add_customer(info, CUSTOMER, "PROFESSIONAL", [("edited_cost", 5), ("kept_cost", 5), ("other_cost", 3)])
    client.wait_for_dags(dag_ids, timeout=240)
    edited = dag_ids[0]
    # A version a run used is kept: Airflow adds a new one for a change (an unused one is rewritten).
    run = client.trigger(edited)
    client.wait_for_run(edited, run["dag_run_id"], timeout=300)
    conn = _metadata(info)
    try:
        versions, hashes = _fleet_state(conn)
        assert set(dag_ids) <= set(versions) and len(versions) > len(dag_ids)  # the demo fleet too

        # No change in BigQuery: the round asks for no parse at all.
        assert _files_asked(run_module(info.env, "sync")) == 0
        # Even when every shard is parsed again, nothing new is written: same hash, same versions.
        asked_at = datetime.now(UTC)
        run_module(info.env, "parse", "--all")
        _wait(
            lambda: all(t > asked_at for t in _parsed_at(conn).values()),
            "every shard file parsed after `parse --all`",
            timeout=300,
        )
        assert _fleet_state(conn) == (versions, hashes), "a parse of unchanged configs wrote new DAG versions"

        # One config edited in BigQuery (a new version row, as the API or a person writes it).
        [row] = rows_of_customer(
            BigQueryStore(info.settings), "customer_pipeline_configs", CUSTOMER, "AND config_id = 'edited_cost'"
        )
        edit = {
            **row,
            "display_name": "Edited cost pipeline",
            "version": row["version"] + 1,
            "updated_at": datetime.now(UTC),
        }
        BigQueryStore(info.settings).load_rows("customer_pipeline_configs", [edit])
        before = _parsed_at(conn)
        output = run_module(info.env, "sync")
        assert _files_asked(output) == 2, "the edited config's shard and the errors file"
        live_after = _wait(lambda: _fleet_state(conn)[1][edited] != hashes[edited], "the edited DAG re-serialised")
        after_versions, after_hashes = _fleet_state(conn)

        assert after_versions[edited] == versions[edited] + 1
        assert {d: n for d, n in after_versions.items() if d != edited} == {
            d: n for d, n in versions.items() if d != edited
        }
        assert {d: h for d, h in after_hashes.items() if d != edited} == {
            d: h for d, h in hashes.items() if d != edited
        }
        assert _parses_not_asked_for(before, _parsed_at(conn), {shard_file(shard_of(edited, shards))}) == set()
        assert live_after < 60, f"the edit took {live_after:.0f}s after the round to be live"

        # Edited again at once, seconds after the DAG's last write (Airflow's default 30 s
        # min_serialized_dag_update_interval would skip this write until the periodic parse).
        again = {**edit, "display_name": "Edited twice", "version": edit["version"] + 1}
        store = BigQueryStore(info.settings)
        store.load_rows("customer_pipeline_configs", [{**again, "updated_at": datetime.now(UTC)}])
        assert _files_asked(run_module(info.env, "sync")) == 2
        live_again = _wait(lambda: _fleet_state(conn)[1][edited] != after_hashes[edited], "the second edit serialised")
        # no run used the first edit's version: Airflow rewrites it rather than add one
        assert _fleet_state(conn)[0][edited] == versions[edited] + 1
        assert live_again < 60, f"the second edit took {live_again:.0f}s after the round to be live"
    finally:
        conn.close()


def _serialized(conn: Any, dag_id: str) -> tuple[str, datetime]:
    """The DAG's latest serialized row: (hash, when written)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT dag_hash, last_updated FROM serialized_dag WHERE dag_id = %s ORDER BY last_updated DESC LIMIT 1",
            (dag_id,),
        )
        return cur.fetchone()


def _last_parsed(conn: Any, dag_id: str) -> datetime:
    with conn.cursor() as cur:
        cur.execute("SELECT last_parsed_time FROM dag WHERE dag_id = %s", (dag_id,))
        return cur.fetchone()[0]


def test_a_refresh_on_the_command_line_publishes_an_edited_dag_itself_and_its_shards_parse_writes_nothing_more(stack):
    info, client = stack
    customer = "cust_published_by_cli"
    dag_ids = add_customer(info, customer, "PROFESSIONAL", [("published_cost", 5), ("untouched_cost", 5)])
    client.wait_for_dags(dag_ids, timeout=240)
    edited = dag_ids[0]
    conn = _metadata(info)
    try:
        versions, hashes = _fleet_state(conn)
        store = BigQueryStore(info.settings)
        [row] = rows_of_customer(store, "customer_pipeline_configs", customer, "AND config_id = 'published_cost'")
        now = datetime.now(UTC)
        edit = {**row, "display_name": "Published by the CLI", "version": row["version"] + 1, "updated_at": now}
        # and a new config in the same refresh: a DAG Airflow does not have yet is the DAG processor's
        new = {**row, "config_id": "new_cost", "display_name": "New", "created_at": now, "updated_at": now}
        store.load_rows("customer_pipeline_configs", [edit, new])

        output = run_module(info.env, "snapshot", "refresh")
        written = _serialized(conn, edited)  # read the moment the command returns, before any wait
        assert "published 1 DAG(s) now" in output, output
        # stdout is the command's result alone: what Airflow logs while publishing goes to stderr
        assert output.startswith(f"snapshot {info.settings.snapshot_file}: "), output
        assert written[0] != hashes[edited], "the edited DAG is not live when the command returns"

        # The DAG processor then parses the shard it was asked for (perhaps before the read above: a
        # parse after the published write) and finds the DAG unchanged.
        _wait(lambda: _last_parsed(conn, edited) > written[1], "the DAG processor's parse of the edited shard")
        assert _serialized(conn, edited) == written, "the DAG processor wrote the published DAG again"
        after_versions, after_hashes = _fleet_state(conn)
        assert {d: n for d, n in after_versions.items() if d in versions} == versions  # no version added
        assert {d: h for d, h in after_hashes.items() if d != edited and d in hashes} == {
            d: h for d, h in hashes.items() if d != edited
        }
        # the twin: the new config's DAG is created, by the DAG processor's parse of its shard
        client.wait_for_dags([f"{customer}.new_cost"], timeout=120)
    finally:
        conn.close()


PROBE_FILE = '''"""A file of test_fleet_parsing.py: its parse names its DAG after the label it reads when it starts, and
takes {seconds} s."""
import pathlib
import time

from airflow.sdk import DAG

state = pathlib.Path({state!r})
label = (state / "label").read_text()
(state / f"started_{{label}}").touch()
time.sleep({seconds})
dag = DAG(dag_id=f"cp_parse_probe_{{label}}", schedule=None)
'''


def test_a_parse_asked_for_while_the_file_is_being_parsed_runs_after_that_parse(stack, tmp_path):
    """Airflow 3.3.2 drops a request claimed while its file is being parsed; a change the running parse
    did not see (an API create landing mid-parse) then waited for the daily re-parse. Our DAG
    processor holds it and parses the file again when that parse ends."""
    from customer_pipelines.settings import REPO_ROOT

    info, client = stack
    conn = _metadata(info)

    def request_parse() -> None:  # the row Airflow's parseDagFile endpoint and fleet/parsing.py write
        request_id = hashlib.md5(f"{DEFAULT_BUNDLE}:{probe.name}".encode()).hexdigest()
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO dag_priority_parsing_request (id, bundle_name, relative_fileloc)"
                " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                (request_id, DEFAULT_BUNDLE, probe.name),
            )

    probe = REPO_ROOT / "dags" / f"cp_parse_probe_{tmp_path.name[-12:].replace('-', '_')}.py"
    probe.write_text(PROBE_FILE.format(state=str(tmp_path), seconds=10))
    try:
        (tmp_path / "label").write_text("first")
        request_parse()
        deadline = time.monotonic() + 60
        while not (tmp_path / "started_first").exists():
            assert time.monotonic() < deadline, "the DAG processor did not start the requested parse"
            time.sleep(0.2)
        (tmp_path / "label").write_text("second")  # the change the running parse does not see
        request_parse()
        client.wait_for_dags(["cp_parse_probe_first"], timeout=60)  # the parse that was running
        client.wait_for_dags(["cp_parse_probe_second"], timeout=60)  # and the one asked for during it
    finally:
        probe.unlink(missing_ok=True)
        conn.close()
        for label in ("first", "second"):
            with contextlib.suppress(AirflowAPIError):  # never parsed
                client._request("DELETE", f"/api/v2/dags/cp_parse_probe_{label}")
