"""The BigQuery store: every read and write of the project's tables goes through here, with SQL
from include/sql and values as query parameters. Callers see rows as dicts and one error type."""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from functools import cached_property
from typing import Any

from google.api_core.exceptions import GoogleAPIError
from google.cloud import bigquery
from google.cloud.bigquery.retry import DEFAULT_RETRY

from customer_pipelines.bigquery.sql import load_sql, sql_files
from customer_pipelines.settings import PLANES, Plane, Settings, get_settings

INSERT_DEADLINE_SECONDS = 15.0
"""A streaming insert's whole budget, retries included (each attempt: INSERT_TIMEOUT_SECONDS)."""
INSERT_TIMEOUT_SECONDS = 5.0
INSERT_MAX_ROWS = 500
INSERT_MAX_BYTES = 5 * 1024 * 1024
"""One insertAll request carries at most this many rows and bytes: BigQuery caps a request at 10 MB
and 50,000 rows and recommends about 500 rows; larger batches are split."""
TRANSIENT_ROW_REASONS = frozenset({"backendError", "internalError", "timeout", "rateLimitExceeded", "quotaExceeded"})
"""Per-row insertErrors reasons that a later attempt can succeed on: such rows are retried, never
set aside (``stopped`` rows are simply ones the request did not write because of another row)."""
SCHEMA_FOLDERS: dict[Plane, tuple[str, ...]] = {"control": ("schema", "views"), "data": ("data_schema",)}
"""What applying the schema runs on each plane, in order."""


_ADD_COLUMN = re.compile(
    r"ALTER\s+TABLE\s+`(?P<table>[^`]+)`\s+ADD\s+COLUMN\s+IF\s+NOT\s+EXISTS\s+(?P<column>\w+)\s+(?P<type>\w+)",
    re.IGNORECASE,
)
"""A column added to a deployed table by a schema file (see _emulator_catalog_catch_up)."""


class StoreError(RuntimeError):
    """BigQuery refused or could not be reached; the message says which statement or table."""


class RejectedRows(StoreError):
    """A streaming insert did not write some rows: ``rejected`` maps each row refused for its own
    content to BigQuery's reasons, ``transient`` holds rows refused for a reason a later attempt can
    succeed on (or not written because another row of their request was refused). Every other row
    was written."""

    def __init__(self, message: str, rejected: dict[int, list[str]], transient: set[int] | None = None) -> None:
        super().__init__(message)
        self.rejected = rejected
        self.transient = transient or set()
        """Indexes of rows refused only for transient reasons: to send again later."""


def _chunks(rows: Sequence[Mapping[str, Any]]) -> list[tuple[int, int]]:
    """(start, end) of consecutive slices of at most INSERT_MAX_ROWS rows and about INSERT_MAX_BYTES."""
    bounds, start, size = [], 0, 0
    for index, row in enumerate(rows):
        row_bytes = len(json.dumps(row, default=str))
        if index > start and (index - start >= INSERT_MAX_ROWS or size + row_bytes > INSERT_MAX_BYTES):
            bounds.append((start, index))
            start, size = index, 0
        size += row_bytes
    if start < len(rows):
        bounds.append((start, len(rows)))
    return bounds


def _query_parameter(name: str, value: Any) -> bigquery.ScalarQueryParameter | bigquery.ArrayQueryParameter:
    if isinstance(value, (list, tuple)):
        element_type = _bq_type(value[0]) if value else "STRING"
        return bigquery.ArrayQueryParameter(name, element_type, list(value))
    return bigquery.ScalarQueryParameter(name, _bq_type(value), value)


def _bq_type(value: Any) -> str:
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    if isinstance(value, Decimal):
        return "NUMERIC"
    if isinstance(value, datetime):
        return "TIMESTAMP"
    if isinstance(value, date):
        return "DATE"
    return "STRING"


def _json_ready(row: Mapping[str, Any], *, json_as_text: bool = True) -> dict[str, Any]:
    """A row as JSON values. JSON columns travel as text in streaming inserts and as objects in
    newline-delimited load files."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, (datetime, date)):
            out[key] = value.isoformat()
        elif isinstance(value, Decimal):
            out[key] = str(value)
        elif isinstance(value, dict):
            out[key] = json.dumps(value, sort_keys=True) if json_as_text else value
        else:
            out[key] = value
    return out


def split_statements(sql: str) -> list[str]:
    """Statements end with ';' at the end of a line (the project's SQL files keep to that). Whole-line
    comments are dropped: they may name @parameters, which some engines (the emulator) count."""
    statements, current = [], []
    for line in sql.splitlines():
        if line.lstrip().startswith("--"):
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            statements.append("\n".join(current).rstrip().rstrip(";"))
            current = []
    tail = "\n".join(current).strip()
    if tail:
        statements.append(tail)
    return [s for s in statements if _has_code(s)]


def _has_code(statement: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in statement.splitlines())


class BigQueryStore:
    """The tables of one plane: ``plane="control"`` (the default: configs, run-state mirror, views)
    or ``plane="data"`` (the customers' data the templates read and write), each on its own
    project, connection and client."""

    def __init__(
        self, settings: Settings | None = None, client: bigquery.Client | None = None, *, plane: Plane = "control"
    ) -> None:
        if plane not in PLANES:
            raise ValueError(f"unknown BigQuery plane {plane!r}: one of {PLANES}")
        self.settings = settings or get_settings()
        self.plane = plane
        self._client = client
        self.calls: Counter[str] = Counter()
        """API calls made, by kind (query, dml, insert, load, ...): the benchmarks read it."""

    @cached_property
    def client(self) -> bigquery.Client:
        if self._client is not None:
            return self._client
        from customer_pipelines.bigquery.hooks import CustomerPipelinesBigQueryHook

        return CustomerPipelinesBigQueryHook(settings=self.settings, plane=self.plane).get_client()

    def for_plane(self, plane: Plane) -> BigQueryStore:
        """The store of ``plane`` with these settings: this one if it is that plane's."""
        return self if plane == self.plane else BigQueryStore(self.settings, plane=plane)

    @property
    def project(self) -> str:
        return self.settings.project_of(self.plane)

    @property
    def dataset(self) -> str:
        return self.settings.dataset_of(self.plane)

    def table_id(self, table: str) -> str:
        return f"{self.project}.{self.dataset}.{table}"

    # -- statements -------------------------------------------------------------------------

    def query(self, sql_file: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run the statements of ``include/sql/<sql_file>`` in order, each as its own job with the
        parameters it uses; returns the rows of the last one, as dicts. Statements of one file are
        not one transaction: where atomicity matters a file holds a single MERGE."""
        params = params or {}
        rows: list[dict[str, Any]] = []
        for statement in split_statements(load_sql(sql_file, self.settings, self.plane)):
            used = [_query_parameter(k, v) for k, v in params.items() if re.search(rf"@{k}\b", statement)]
            self.calls["query"] += 1
            try:
                result = self.client.query(
                    statement, job_config=bigquery.QueryJobConfig(query_parameters=used)
                ).result()
            except GoogleAPIError as exc:
                raise StoreError(f"{sql_file}: {exc}") from exc
            rows = [dict(row.items()) for row in result]
        return rows

    def apply_schema(self) -> list[str]:
        """Create the datasets, tables and views of both planes, each on its own BigQuery (the
        same one unless the data plane is configured apart); applying twice changes nothing."""
        return self.for_plane("control").apply_plane_schema() + self.for_plane("data").apply_plane_schema()

    def apply_plane_schema(self) -> list[str]:
        """Create this plane's dataset and its tables (and views); returns the files applied."""
        ds = bigquery.Dataset(f"{self.project}.{self.dataset}")
        ds.location = self.settings.bq_location
        self.calls["dataset"] += 1
        try:
            self.client.create_dataset(ds, exists_ok=True)
        except GoogleAPIError as exc:
            raise StoreError(f"dataset {self.dataset}: {exc}") from exc
        applied = []
        for sql_file in [f for folder in SCHEMA_FOLDERS[self.plane] for f in sql_files(folder)]:
            self.query(sql_file)
            if self._on_emulator:
                self._emulator_catalog_catch_up(sql_file)
            applied.append(sql_file)
        return applied

    @property
    def _on_emulator(self) -> bool:
        host = self.settings.data_plane_emulator_host if self.plane == "data" else self.settings.bigquery_emulator_host
        return bool(host)

    def _emulator_catalog_catch_up(self, sql_file: str) -> None:
        """The emulator's ALTER TABLE ... ADD COLUMN adds the column to its storage but not to the
        table's schema in its catalog (what ``SELECT *`` views and streaming inserts check), so a
        column added to a deployed table is also added there, as the tables.patch API does on
        BigQuery. Real BigQuery needs only the statement."""
        for statement in split_statements(load_sql(sql_file, self.settings, self.plane)):
            match = _ADD_COLUMN.search(statement)
            if match is None:
                continue
            table = self.client.get_table(match["table"])
            if match["column"] not in {field.name for field in table.schema}:
                table.schema = [*table.schema, bigquery.SchemaField(match["column"], match["type"])]
                self.client.update_table(table, ["schema"])

    # -- rows -------------------------------------------------------------------------------

    def insert_rows(
        self,
        table: str,
        rows: Sequence[Mapping[str, Any]],
        *,
        row_ids: Sequence[str] | None = None,
    ) -> None:
        """Streaming insert (tabledata.insertAll): no DML, so no DML quota or per-table queueing.
        Sent in requests within BigQuery's size limits; a request that fails raises at once (the
        caller spools), and rows refused for their content, from any request, raise together."""
        payload = [_json_ready(r) for r in rows]
        ids = list(row_ids) if row_ids is not None else None
        rejected: dict[int, list[str]] = {}
        transient: set[int] = set()
        for start, end in _chunks(payload):
            pending = list(range(start, end))
            for _ in range(2):  # rows only "stopped" by a refused row of their request go again, once
                refused = self._insert_chunk(
                    table, [payload[i] for i in pending], [ids[i] for i in pending] if ids is not None else None
                )
                stopped = []
                for index, reasons in refused.items():
                    kinds = {r.split(":", 1)[0] for r in reasons}
                    if kinds == {"stopped"}:
                        stopped.append(pending[index])
                    elif kinds <= TRANSIENT_ROW_REASONS | {"stopped"}:
                        transient.add(pending[index])
                    else:
                        rejected[pending[index]] = reasons
                if not stopped:
                    break
                pending = stopped
            else:
                transient.update(pending)
        if rejected or transient:
            raise RejectedRows(
                f"insert into {table}: {len(rejected)} rows refused for their content, "
                f"{len(transient)} for transient reasons: {list(rejected.values())[:3]}",
                rejected,
                transient,
            )

    def _insert_chunk(self, table: str, rows: list[dict[str, Any]], row_ids: list[str] | None) -> dict[int, list[str]]:
        """One insertAll request; returns the per-row errors of rows it did not write."""
        self.calls["insert"] += 1
        try:
            errors = self.client.insert_rows_json(
                self.table_id(table),
                rows,
                row_ids=row_ids,
                # Bounded: a caller (a task, a listener) must not hang for the client's default
                # 10-minute retry window when BigQuery is down; it spools instead.
                retry=DEFAULT_RETRY.with_deadline(INSERT_DEADLINE_SECONDS),
                timeout=INSERT_TIMEOUT_SECONDS,
            )
        except (GoogleAPIError, OSError) as exc:
            raise StoreError(f"insert into {table}: {exc}") from exc
        if errors and all(x.get("reason") == "stopped" for e in errors for x in e.get("errors", [])):
            raise StoreError(f"insert into {table} failed: {errors[:3]}")
        return {
            int(e["index"]): [f"{x.get('reason')}: {x.get('message')}" for x in e.get("errors", [])] for e in errors
        }

    def load_rows(self, table: str, rows: Iterable[Mapping[str, Any]], *, replace: bool = False) -> int:
        """Batch load (a load job: no DML quota, no streaming buffer): for seeding and bulk changes;
        ``replace`` swaps the table's whole content atomically (WRITE_TRUNCATE)."""
        payload = [_json_ready(r, json_as_text=False) for r in rows]
        if not payload and not replace:
            return 0
        table_id = self.table_id(table)
        body = io.BytesIO("\n".join(json.dumps(row) for row in payload).encode())
        self.calls["load"] += 1
        try:
            destination = self.client.get_table(table_id)
            job_config = bigquery.LoadJobConfig(
                schema=destination.schema,
                write_disposition=(
                    bigquery.WriteDisposition.WRITE_TRUNCATE if replace else bigquery.WriteDisposition.WRITE_APPEND
                ),
                source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
            )
            # size=None: a resumable upload (multipart uploads are not served by every emulator).
            self.client.load_table_from_file(body, destination, job_config=job_config, size=None).result()
        except GoogleAPIError as exc:
            raise StoreError(f"load into {table}: {exc}") from exc
        return len(payload)

    # -- reads used by the snapshot ----------------------------------------------------------

    def fetch_configs(self) -> list[dict[str, Any]]:
        return self.query("queries/snapshot_configs.sql")

    def fetch_customers(self) -> list[dict[str, Any]]:
        return self.query("queries/snapshot_customers.sql")

    def fetch_config_changes(self, since: datetime) -> list[dict[str, Any]]:
        """The latest version of each config with a version written after ``since``, soft-deleted
        ones included (``deleted_at`` set): what an incremental snapshot refresh applies."""
        return self.query("queries/snapshot_config_changes.sql", {"since": since})
