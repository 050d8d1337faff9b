"""Every setting of the project in one place: environment variables prefixed ``CP_`` (plus
``BIGQUERY_EMULATOR_HOST``, the google client's own variable), each with a documented default.
The README's configuration table lists the same fields."""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from customer_pipelines.fleet.shards import MAX_SHARDS

REPO_ROOT = Path(__file__).resolve().parents[2]
SQL_DIR = REPO_ROOT / "include" / "sql"

_PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{4,61}[a-z0-9]$|^[a-z][a-z0-9-]{0,28}$")
_DATASET_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")

Plane = Literal["control", "data"]
"""Which BigQuery a statement goes to: the platform's own tables and views (control), or the
customers' data the pipeline templates read and write (data)."""
PLANES: tuple[Plane, ...] = ("control", "data")


def default_state_dir() -> Path:
    # Outside the repo and outside $HOME: the embedded PostgreSQL runs as its own user when started
    # as root, and must be able to reach its data. One directory per checkout.
    checkout = hashlib.sha256(str(REPO_ROOT).encode()).hexdigest()[:8]
    return Path("/var/tmp") / f"customer-pipelines-{checkout}"


class ParseSettings(BaseSettings):
    """The settings a DAG file reads while Airflow parses it, and no others: a bad value of any
    other setting (a syncer's interval, a project id) must not hide the fleet's DAGs."""

    model_config = SettingsConfigDict(env_prefix="CP_", extra="ignore")

    state_dir: Path = Field(default_factory=default_state_dir)
    """Where the embedded services keep their data (emulator, PostgreSQL, Airflow home, snapshot)."""
    snapshot_path: Path | None = None
    """The local config snapshot DAG files read; default ``<state_dir>/snapshot/configs.sqlite``."""
    pool_prefix: str = Field(default="cp_", pattern=r"^[A-Za-z0-9_.-]{0,64}$")
    max_retry_delay_minutes: int = Field(default=60, ge=1)
    fleet_shards: int = Field(default=16, ge=1, le=MAX_SHARDS)
    """Shard files the fleet's DAGs are spread over (``dags/customer_pipelines_fleet/shard_NN.py``,
    128 shipped): at most about 800 configs per shard keeps each file within the DAG processor's
    per-file timeout while it writes a fleet's first parse; about 400 makes a change live within
    10 s, since Airflow writes every DAG of the re-parsed file (README, "Fleet scale"). Every
    Airflow process and the syncer must see the same value."""

    snapshot_store_url: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9+.-]*://\S+$")
    """Object storage the snapshot's generations are published to (``gs://bucket/prefix``,
    ``s3://bucket/prefix``, ``file:///path``: any fsspec URL), for DAG processors and Celery workers
    that share no disk with the syncer: each fetches the generation it needs into its own state
    directory (fleet/bundle.py). Unset: every process reads ``snapshot_file`` on one shared disk."""
    snapshot_store_keep_hours: int = Field(default=168, ge=1)
    """How long a published generation stays in the store (a run retried days later runs on the
    generation its DAG was parsed from); the newest ``KEEP_NEWEST`` always stay."""

    @property
    def snapshot_file(self) -> Path:
        return self.snapshot_path or self.state_dir / "snapshot" / "configs.sqlite"


class Settings(ParseSettings):
    bq_project: str = "demo-project"
    bq_dataset: str = "customers_metadata"
    bq_data_dataset: str = "customer_pipeline_data"
    """Dataset the demo pipeline templates read and write (billing exports, cost tables)."""
    bq_location: str = "US"
    bigquery_emulator_host: str | None = Field(
        default=None,
        validation_alias=AliasChoices("BIGQUERY_EMULATOR_HOST", "CP_BIGQUERY_EMULATOR_HOST"),
    )
    """``host:port`` of a BigQuery emulator; unset means real BigQuery with real credentials."""
    real_bigquery: bool = False
    """``CP_REAL_BIGQUERY=true``: the local stack starts no emulator and uses real BigQuery (with
    ``CP_BQ_PROJECT`` and real credentials); otherwise an unset emulator host means the local one."""
    gcp_conn_id: str = "customer_pipelines_bigquery"

    data_gcp_conn_id: str | None = None
    """Airflow connection of the data plane (the BigQuery the templates read and write); unset:
    ``gcp_conn_id``."""
    data_bq_project: str | None = None
    """Project of the data plane's dataset (``bq_data_dataset``); unset: ``bq_project``."""
    data_bigquery_emulator_host: str | None = None
    """``host:port`` of the data plane's emulator; unset: the control plane's ``bigquery_emulator_host``."""

    sync_interval_seconds: int = Field(default=60, ge=5)
    refresh_guard_share: float = Field(default=0.25, gt=0, le=1)
    refresh_guard_min_dags: int = Field(default=100, ge=0)
    """A refresh that would stop more than max(min_dags, share x the running DAGs) is refused
    (and alerted) until forced with ``snapshot refresh --force``."""
    full_refresh_minutes: int = Field(default=60, ge=0)
    """The syncer's snapshot refresh reads only the configs changed since its last one (and every
    customer); once this many minutes have passed since the last full read it reads every config
    again, converging on what an incremental read cannot see (rows removed, or edited by hand with an
    old ``updated_at``). 0: every refresh is full."""

    quota_db_url: str | None = None
    """PostgreSQL URL of the quota ledger (``postgresql://user@host/db``); the local stack sets it
    to its own PostgreSQL (embedded, or the one given by ``CP_POSTGRES_URL``)."""
    quota_db_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    """Bound on connecting to the quota ledger (TCP, TLS, startup, authentication)."""
    quota_db_statement_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    """Bound on each statement of the quota ledger: the server's ``statement_timeout`` and
    ``idle_in_transaction_session_timeout``, and how long the client waits for any answer."""
    quota_db_lock_timeout_seconds: float = Field(default=2.0, gt=0, le=300)
    """The quota ledger's ``lock_timeout``: how long a statement waits for a lock (the schema lock
    of another syncer, a concurrent reservation of the same run)."""
    airflow_db_statement_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    """Bound on each statement the syncer and the command line send to Airflow's metadata database
    (pools, paused flags): a stuck statement fails the round, the next round starts afresh."""
    airflow_db_lock_timeout_seconds: float = Field(default=5.0, gt=0, le=3600)
    """How long the syncer waits for a lock in Airflow's metadata database (a pool row another
    process holds) before failing the round."""
    postgres_url: str | None = None
    """An external PostgreSQL server for the local stack (Airflow metadata + quota ledger);
    unset: the stack runs the embedded PostgreSQL under ``<state_dir>/postgres``."""

    consecutive_failures_to_pause: int = Field(default=5, ge=1)
    consecutive_failures_to_warn: int = Field(default=3, ge=1)
    failure_policy_lookback_hours: float = Field(default=24.0, gt=0, le=24 * 31)
    """How far back each sync round looks for new failed runs (the mirror's newest partitions);
    only configs with a failure in it are evaluated, so a round reads a day's partitions, not the
    whole run history. Longer than any spool delay you expect (a transition spooled for longer is
    counted once another failure of its config arrives)."""
    customer_credentials: Literal["off", "required"] = "off"
    """``required``: each run resolves its customer's Airflow connection ``cp_<customer>_<provider>``
    through Airflow's secrets backends when its pipeline starts (runs/credentials.py); a missing one
    fails the run without a retry."""
    alert_notifier: str | None = None
    """``package.module:function`` called with each Alert (failure policy, fleet alerts; besides the log)."""
    alert_waiting_runs: int = Field(default=1000, ge=1)
    """Fleet alert RUNS_WAITING: more runs than this waiting to start (the seeds: queue length > 1000)."""
    alert_running_minutes: float = Field(default=30.0, gt=0)
    """Fleet alert RUN_TOO_LONG: a run whose task has been running longer than this."""
    alert_failure_rate: float = Field(default=0.10, gt=0, le=1)
    """Fleet alert FAILURE_RATE: the fleet's or a customer's failed share of the runs finished in
    the window above this."""
    alert_failure_window_minutes: float = Field(default=60.0, gt=0, le=7 * 24 * 60)
    alert_failure_min_runs: int = Field(default=10, ge=1)
    """Runs finished in the window below which no failure rate is judged (one failure of two is not 50%)."""

    late_after_minutes: float = Field(default=10.0, gt=0, le=24 * 60)
    """A tick with no started run this long after it is *late* (the tick history, the syncer's alert)."""
    tick_check_hours: float = Field(default=24.0, gt=0, le=24 * 31)
    """How far back each sync round checks every runnable config's ticks for runs missed with no cause."""
    backfill_max_active_runs: int = Field(default=2, ge=1, le=100)
    """Runs of one backfill running at once (Airflow's backfill ``max_active_runs``): backfills drain
    beside the live runs instead of flooding the customer's pool."""

    api_rate_limit_per_minute: int = Field(default=600, ge=1, le=1_000_000)
    """Requests a caller (an API key, an Airflow user) may send the REST API per minute, in bursts of
    as many; more get 429 with Retry-After. Counted per API server."""
    api_key_refresh_seconds: float = Field(default=30.0, ge=1, le=3600)
    """How often each API server reloads the API keys from BigQuery: a key issued or revoked through
    another server works, or stops working, here within this time (at once on the server that did it)."""
    api_token_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    """How long an API server reuses an Airflow token it verified (and the permissions Airflow's auth
    manager granted it), never past the token's own expiry; 0: verify every request. Verifying asks
    Airflow's database whether the token was revoked, once per request otherwise; a token revoked by
    Airflow's logout, or a permission withdrawn, takes effect here within this time."""

    emulator_port: int = 9050
    emulator_grpc_port: int = 9060
    airflow_port: int = 8080
    data_emulator_port: int | None = None
    """Set: the local stack runs a second emulator, for the data plane, on this port."""
    executor: Literal["LocalExecutor", "CeleryExecutor"] = "LocalExecutor"
    """The local stack's executor: the LocalExecutor (the scheduler forks the tasks), or Celery, the
    topology of docker-compose.yaml: Redis as broker, ``celery_workers`` workers as processes."""
    celery_workers: int = Field(default=2, ge=1, le=16)
    """Celery workers the local stack starts (CeleryExecutor only)."""
    celery_worker_concurrency: int = Field(default=8, ge=1, le=256)
    """Tasks at once per Celery worker (Airflow's ``[celery] worker_concurrency``)."""
    redis_url: str | None = None
    """Celery's broker for the local stack; unset: the stack runs Redis itself (``redis-server``) on
    127.0.0.1:``redis_port`` with a generated password."""
    redis_port: int = 6380
    auth_manager: Literal["simple", "fab"] = "simple"
    """The local stack's Airflow auth manager: Airflow's development SimpleAuthManager (the demo's one
    admin, password in the state directory), or FAB (``fab``: users and roles in Airflow's database,
    what docker-compose.yaml runs), its admin created with the same generated password."""
    data_emulator_grpc_port: int | None = None
    """The data plane emulator's gRPC port (needed with ``data_emulator_port``)."""

    @field_validator("bq_project", "data_bq_project")
    @classmethod
    def _project_is_an_id(cls, value: str | None) -> str | None:
        if value is not None and not _PROJECT_ID.match(value):
            raise ValueError(f"not a BigQuery project id: {value!r}")
        return value

    @field_validator("bq_dataset", "bq_data_dataset")
    @classmethod
    def _dataset_is_an_id(cls, value: str) -> str:
        if not _DATASET_ID.match(value):
            raise ValueError(f"not a BigQuery dataset id: {value!r}")
        return value

    @property
    def emulator_url(self) -> str | None:
        """The emulator as the google client wants it (with a scheme), or None for real BigQuery."""
        return _url(self.bigquery_emulator_host)

    @property
    def data_plane_conn_id(self) -> str:
        return self.data_gcp_conn_id or self.gcp_conn_id

    @property
    def data_plane_project(self) -> str:
        return self.data_bq_project or self.bq_project

    @property
    def data_plane_emulator_host(self) -> str | None:
        return self.data_bigquery_emulator_host or self.bigquery_emulator_host

    @property
    def data_plane_emulator_url(self) -> str | None:
        return _url(self.data_plane_emulator_host)

    def conn_id_of(self, plane: Plane) -> str:
        return self.data_plane_conn_id if plane == "data" else self.gcp_conn_id

    def project_of(self, plane: Plane) -> str:
        return self.data_plane_project if plane == "data" else self.bq_project

    def dataset_of(self, plane: Plane) -> str:
        return self.bq_data_dataset if plane == "data" else self.bq_dataset

    def emulator_url_of(self, plane: Plane) -> str | None:
        return self.data_plane_emulator_url if plane == "data" else self.emulator_url

    @property
    def spool_dir(self) -> Path:
        return self.state_dir / "mirror-spool"

    @property
    def embedded_postgres_dir(self) -> Path:
        return self.state_dir / "postgres"

    def require_quota_db_url(self) -> str:
        if not self.quota_db_url:
            raise RuntimeError("CP_QUOTA_DB_URL is not set: the quota ledger needs a PostgreSQL URL")
        return self.quota_db_url


def _url(host: str | None) -> str | None:
    if not host:
        return None
    return host if "://" in host else f"http://{host}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def settings_problems(model: type[BaseSettings]) -> list[str]:
    """Each invalid setting of ``model`` as one line naming its variable and the reason (empty when
    every setting is valid); never raises."""
    try:
        model()
    except ValidationError as exc:
        return [
            f"setting CP_{'_'.join(str(p) for p in error['loc']).upper()}: {error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors()
        ]
    return []


def get_parse_settings() -> ParseSettings:
    """The DAG files' settings; an invalid one falls back to its default (reported by the errors DAG
    file as an import error), so a bad setting never hides the DAGs."""
    try:
        return ParseSettings()
    except ValidationError as exc:
        bad = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
        defaults = {
            name: field.get_default(call_default_factory=True) for name, field in ParseSettings.model_fields.items()
        }
        return ParseSettings(**{name: defaults[name] for name in bad if name in defaults})
