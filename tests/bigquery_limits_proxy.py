"""A test double of BigQuery's write limits, which the emulator (``bqemulator``) does not enforce.

An HTTP reverse proxy between a BigQuery client and the emulator's REST port: every request goes
through unchanged, except that the proxy enforces, as BigQuery does, these documented limits:

* the streaming buffer ("Streaming data into BigQuery", "Data manipulation language (DML)
  limitations": https://cloud.google.com/bigquery/docs/data-manipulation-language#limitations):
  rows written by streaming insert (``tabledata.insertAll``) in the last 30 minutes cannot be changed
  by ``UPDATE``, ``DELETE`` or ``MERGE``. The double is stricter than BigQuery in one way: it refuses
  any such statement on a table that received streamed rows within ``streaming_buffer_seconds``,
  whichever rows the statement would touch (it cannot know which), with BigQuery's message
  "UPDATE or DELETE statement over table X would affect rows in the streaming buffer, which is not
  supported". ``INSERT`` statements are allowed, as on BigQuery;
* DML concurrency ("Quotas and limits", "Data manipulation language statements":
  https://cloud.google.com/bigquery/quotas#data-manipulation-language-statements, and "DML statement
  conflicts" on the DML page): at most 2 mutating DML statements (UPDATE, DELETE, MERGE) run at once
  on one table, up to 20 more wait in that table's queue (first come, first served), and one beyond
  that fails with quotaExceeded "Too many DML statements outstanding against table X, limit is 20".
  A statement counts as running for the duration of the forwarded request that submitted it (the
  emulator runs a job before it answers). INSERT statements are not counted (BigQuery runs them
  concurrently).

Not modelled: "Could not serialize access to table X due to concurrent update" between the two
statements running at once on the same rows (the proxy cannot tell which rows a statement touches);
per-project job and query quotas.

Refusals are answered as BigQuery answers an invalid request: HTTP 400 with the JSON error body the
google-cloud-bigquery client turns into ``google.api_core.exceptions.BadRequest`` (never retried by
its default retry: neither ``invalidQuery`` nor ``quotaExceeded`` is a retryable reason).

What the proxy saw is in :attr:`BigQueryLimitsProxy.stats`, for tests to assert on."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

STREAMING_BUFFER_SECONDS = 1800.0
"""How long streamed rows stay in the streaming buffer (BigQuery: "up to 30 minutes")."""
MAX_RUNNING_DML = 2
"""Mutating DML statements BigQuery runs at once on one table."""
MAX_QUEUED_DML = 20
"""Mutating DML statements BigQuery queues on one table; one more fails."""
UPSTREAM_TIMEOUT_SECONDS = 120.0

MUTATING_VERBS = frozenset({"UPDATE", "DELETE", "MERGE"})

_INSERT_ALL = re.compile(r"/projects/(?P<project>[^/]+)/datasets/(?P<dataset>[^/]+)/tables/(?P<table>[^/]+)/insertAll$")
_JOBS_INSERT = re.compile(r"/projects/(?P<project>[^/]+)/jobs$")
_JOBS_QUERY = re.compile(r"/projects/(?P<project>[^/]+)/queries$")
_IDENT = r"(?:`[^`]+`|[A-Za-z_][\w-]*)"
_DML = re.compile(
    rf"^\s*(?P<verb>UPDATE|DELETE|MERGE|INSERT)(?:\s+(?:FROM|INTO))?\s+(?P<table>{_IDENT}(?:\s*\.\s*{_IDENT})*)",
    re.IGNORECASE,
)
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding"}
)


@dataclass
class ProxyStats:
    """What the proxy saw, by table (``project.dataset.table``)."""

    streamed_requests: Counter[str] = field(default_factory=Counter)
    """insertAll requests that wrote rows."""
    streamed_rows: Counter[str] = field(default_factory=Counter)
    mutating_dml: Counter[str] = field(default_factory=Counter)
    """UPDATE, DELETE and MERGE statements forwarded to the emulator (not those refused)."""
    insert_dml: Counter[str] = field(default_factory=Counter)
    """INSERT statements forwarded (not limited)."""
    refused_streaming_buffer: Counter[str] = field(default_factory=Counter)
    refused_too_many_dml: Counter[str] = field(default_factory=Counter)
    max_running_dml: Counter[str] = field(default_factory=Counter)
    """The most mutating DML statements seen running at once on each table."""
    max_queued_dml: Counter[str] = field(default_factory=Counter)
    requests: int = 0

    @property
    def refused(self) -> int:
        """Statements refused for any limit."""
        return sum(self.refused_streaming_buffer.values()) + sum(self.refused_too_many_dml.values())


@dataclass
class Statement:
    """One DML statement of a query: its verb and the table it writes."""

    verb: str
    table: str

    @property
    def mutating(self) -> bool:
        return self.verb in MUTATING_VERBS


def split_statements(sql: str) -> list[str]:
    """The statements of a query or script, comments dropped; semicolons in quotes do not split."""
    statements, current, i = [], [], 0
    quote: str | None = None
    while i < len(sql):
        char = sql[i]
        if quote:
            current.append(char)
            if char == "\\" and quote != "`" and i + 1 < len(sql):
                current.append(sql[i + 1])
                i += 1
            elif char == quote:
                quote = None
        elif char in "'\"`":
            quote = char
            current.append(char)
        elif sql.startswith("--", i) or char == "#":
            end = sql.find("\n", i)
            i = len(sql) if end < 0 else end
            continue
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = len(sql) if end < 0 else end + 2
            current.append(" ")
            continue
        elif char == ";":
            statements.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    statements.append("".join(current))
    return [s.strip() for s in statements if s.strip()]


def dml_statements(sql: str, project: str, default_dataset: dict[str, str] | None = None) -> list[Statement]:
    """The DML statements of ``sql`` with their target tables as ``project.dataset.table`` (a table
    named without project or dataset takes the job's default dataset, then the job's project)."""
    found = []
    default_dataset = default_dataset or {}
    for statement in split_statements(sql):
        match = _DML.match(statement)
        if match is None:
            continue
        parts = re.sub(r"[`\s]", "", match["table"]).split(".")
        if len(parts) == 1:
            parts = [default_dataset.get("projectId", project), default_dataset.get("datasetId", ""), *parts]
        elif len(parts) == 2:
            parts = [default_dataset.get("projectId", project), *parts]
        found.append(Statement(match["verb"].upper(), ".".join(parts[-3:])))
    return found


def bigquery_error(code: int, reason: str, message: str, status: str) -> bytes:
    """An error body as BigQuery's REST API sends it."""
    return json.dumps(
        {
            "error": {
                "code": code,
                "message": message,
                "errors": [{"message": message, "domain": "global", "reason": reason}],
                "status": status,
            }
        }
    ).encode()


class Refused(Exception):
    """A statement BigQuery would refuse: the HTTP answer to send instead of forwarding."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.body = bigquery_error(400, reason, message, "INVALID_ARGUMENT")


@dataclass
class _TableQueue:
    running: int = 0
    waiting: deque[object] = field(default_factory=deque)


class BigQueryLimitsProxy:
    """The double: ``start()`` serves on a free loopback port (returned), forwarding to ``upstream``
    (``host:port`` of the emulator's REST API); ``stop()`` shuts it down. ``hold_dml_seconds`` keeps
    each mutating DML in its slot at least that long: BigQuery's take seconds, the emulator's
    milliseconds, so a test can make statements overlap as they do on BigQuery."""

    def __init__(
        self,
        upstream: str,
        *,
        streaming_buffer_seconds: float = STREAMING_BUFFER_SECONDS,
        max_running_dml: int = MAX_RUNNING_DML,
        max_queued_dml: int = MAX_QUEUED_DML,
        hold_dml_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        host, _, port = upstream.removeprefix("http://").rstrip("/").rpartition(":")
        self.upstream_host, self.upstream_port = host, int(port)
        self.streaming_buffer_seconds = streaming_buffer_seconds
        self.max_running_dml = max_running_dml
        self.max_queued_dml = max_queued_dml
        self.hold_dml_seconds = hold_dml_seconds
        self.clock = clock
        self.stats = ProxyStats()
        self._streamed_at: dict[str, float] = {}
        self._queues: defaultdict[str, _TableQueue] = defaultdict(_TableQueue)
        self._lock = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        return self._server.server_address[1]

    @property
    def host(self) -> str:
        """``host:port`` as BIGQUERY_EMULATOR_HOST wants it."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> int:
        proxy = self

        class Handler(_Handler):
            limits = proxy

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        # 32 clients at once must not overflow the listen backlog (the default is 5).
        server.request_queue_size = 256
        server.daemon_threads = True
        server.server_bind()
        server.server_activate()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="bigquery-limits-proxy", daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> BigQueryLimitsProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- limits ---------------------------------------------------------------------------------

    def record_streamed(self, table: str, rows: int) -> None:
        with self._lock:
            self._streamed_at[table] = self.clock()
            self.stats.streamed_requests[table] += 1
            self.stats.streamed_rows[table] += rows

    def in_streaming_buffer(self, table: str) -> bool:
        with self._lock:
            streamed = self._streamed_at.get(table)
            return streamed is not None and self.clock() - streamed < self.streaming_buffer_seconds

    def acquire(self, table: str) -> None:
        """A running slot of ``table``'s mutating DML, waiting in its queue (FIFO) when both are
        taken; raises Refused when the queue is full."""
        with self._lock:
            queue = self._queues[table]
            if queue.running >= self.max_running_dml or queue.waiting:
                if len(queue.waiting) >= self.max_queued_dml:
                    self.stats.refused_too_many_dml[table] += 1
                    raise Refused(
                        "quotaExceeded",
                        f"Too many DML statements outstanding against table {table}, limit is {self.max_queued_dml}",
                    )
                ticket = object()
                queue.waiting.append(ticket)
                self.stats.max_queued_dml[table] = max(self.stats.max_queued_dml[table], len(queue.waiting))
                while queue.waiting[0] is not ticket or queue.running >= self.max_running_dml:
                    self._lock.wait()
                queue.waiting.popleft()
                self._lock.notify_all()  # the next in line may fit too
            queue.running += 1
            self.stats.max_running_dml[table] = max(self.stats.max_running_dml[table], queue.running)

    def release(self, table: str) -> None:
        with self._lock:
            self._queues[table].running -= 1
            self._lock.notify_all()

    def check_streaming_buffer(self, statement: Statement) -> None:
        if self.in_streaming_buffer(statement.table):
            with self._lock:
                self.stats.refused_streaming_buffer[statement.table] += 1
            raise Refused(
                "invalidQuery",
                f"UPDATE or DELETE statement over table {statement.table} would affect rows in the streaming "
                "buffer, which is not supported",
            )

    # -- forwarding -----------------------------------------------------------------------------

    def forward(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(
            self.upstream_host, self.upstream_port, timeout=UPSTREAM_TIMEOUT_SECONDS
        )
        try:
            sent = [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP | {"host", "content-length"}]
            connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            connection.putheader("Host", f"{self.upstream_host}:{self.upstream_port}")
            for name, value in sent:
                connection.putheader(name, value)
            if body or method in ("POST", "PUT", "PATCH"):
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body or None)
            response = connection.getresponse()
            payload = response.read()
            upstream = f"http://{self.upstream_host}:{self.upstream_port}"
            answer = []
            for name, value in response.getheaders():
                if name.lower() in _HOP_BY_HOP or name.lower() == "content-length":
                    continue
                if name.lower() == "location" and value.startswith(upstream):
                    # a resumable upload's next URL: through the proxy too
                    value = f"http://{self.host}{value[len(upstream) :]}"
                answer.append((name, value))
            return response.status, response.reason, answer, payload
        finally:
            connection.close()

    def handle(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        with self._lock:
            self.stats.requests += 1
        path = urlsplit(target).path
        if method == "POST" and (match := _INSERT_ALL.search(path)):
            return self._insert_all(match, target, headers, body)
        if method == "POST" and (match := _JOBS_INSERT.search(path) or _JOBS_QUERY.search(path)):
            statements = self._statements(match["project"], bool(_JOBS_INSERT.search(path)), body)
            if statements:
                return self._dml(statements, method, target, headers, body)
        return self.forward(method, target, headers, body)

    def _insert_all(
        self, match: re.Match[str], target: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        answer = self.forward("POST", target, headers, body)
        if 200 <= answer[0] < 300:
            try:
                rows = len(json.loads(body).get("rows", []))
                failed = len({e.get("index") for e in json.loads(answer[3] or b"{}").get("insertErrors", [])})
            except (ValueError, AttributeError):
                rows, failed = 1, 0
            if rows > failed:
                self.record_streamed(f"{match['project']}.{match['dataset']}.{match['table']}", rows - failed)
        return answer

    @staticmethod
    def _statements(project: str, is_job: bool, body: bytes) -> list[Statement]:
        try:
            request: dict[str, Any] = json.loads(body or b"{}")
        except ValueError:
            return []
        query = request.get("configuration", {}).get("query", {}) if is_job else request
        configuration = request.get("configuration", {}) if is_job else request
        if not isinstance(query, dict) or not isinstance(query.get("query"), str) or configuration.get("dryRun"):
            return []  # not a query, or a dry run (which runs nothing)
        return dml_statements(query["query"], project, query.get("defaultDataset"))

    def _dml(
        self, statements: list[Statement], method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        tables = sorted({s.table for s in statements if s.mutating})
        acquired: list[str] = []
        began = time.monotonic()
        try:
            for table in tables:
                self.acquire(table)
                acquired.append(table)
            # Checked when the statement runs, not when it is queued: as on BigQuery.
            for statement in statements:
                if statement.mutating:
                    self.check_streaming_buffer(statement)
        except Refused as refused:
            for table in acquired:
                self.release(table)
            return 400, "Bad Request", [("Content-Type", "application/json; charset=UTF-8")], refused.body
        try:
            with self._lock:
                for statement in statements:
                    counter = self.stats.mutating_dml if statement.mutating else self.stats.insert_dml
                    counter[statement.table] += 1
            answer = self.forward(method, target, headers, body)
            if acquired:
                time.sleep(max(0.0, self.hold_dml_seconds - (time.monotonic() - began)))
            return answer
        finally:
            for table in acquired:
                self.release(table)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the google client's session expects
    limits: BigQueryLimitsProxy

    def _serve(self) -> None:
        body = self._body()
        try:
            status, reason, headers, payload = self.limits.handle(
                self.command, self.path, list(self.headers.items()), body
            )
        except OSError as exc:
            status, reason, headers = 502, "Bad Gateway", [("Content-Type", "application/json")]
            payload = bigquery_error(502, "backendError", f"limits proxy: upstream unreachable: {exc}", "UNAVAILABLE")
        self.send_response(status, reason)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read ``stats``."""
