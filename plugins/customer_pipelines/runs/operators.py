"""The operator every customer DAG runs: checks the config and its customer may run (as the snapshot
has them when the run starts), runs the config's template, and mirrors each state change of the
run into BigQuery.

Import-light on purpose (the factory imports it at parse time for 50,000 DAGs): BigQuery and the
store are imported when a task executes."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn
from zoneinfo import ZoneInfo

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException, AirflowTaskTimeout

if TYPE_CHECKING:
    from customer_pipelines.models import Customer, PipelineConfig, SkipReason
    from customer_pipelines.runs.mirror import RunIdentity, RunStateMirror
    from customer_pipelines.settings import Settings


class CustomerPipelineOperator(BaseOperator):
    ui_color = "#dbeafe"
    template_fields = ()

    def __init__(
        self,
        *,
        config_id: str,
        customer_id: str,
        provider: str,
        pipeline_template: str,
        parameters: Mapping[str, Any] | None = None,
        timezone: str = "UTC",
        **kwargs: Any,
    ) -> None:
        # The run's summary goes to the mirror (its COMPLETED row's details); an XCom of it would be
        # one more write through Airflow's API server per run that nothing reads.
        kwargs.setdefault("do_xcom_push", False)
        super().__init__(**kwargs)
        self.timezone = timezone
        self.config_id = config_id
        self.customer_id = customer_id
        self.provider = provider
        self.pipeline_template = pipeline_template
        self.parameters = dict(parameters or {})

    def execute(self, context: Any) -> dict[str, Any]:
        from customer_pipelines.bigquery.store import BigQueryStore
        from customer_pipelines.runs.mirror import RunState, RunStateMirror, run_event
        from customer_pipelines.settings import get_settings

        # Without settings there is no BigQuery to mirror to: Airflow records that failure (and the
        # fleet file, which needs the same settings, would not have parsed). Nothing else before the
        # try below may raise.
        settings = get_settings()
        store = BigQueryStore(settings)
        mirror = RunStateMirror(store, settings.spool_dir)
        identity = self.run_identity(context)
        ti = context["ti"]
        started_at = _aware(getattr(ti, "start_date", None)) or datetime.now(UTC)

        try:
            customer = self._check_may_run(settings, mirror, identity)
        except AirflowSkipException:
            raise
        except (AirflowTaskTimeout, Exception) as exc:  # noqa: BLE001 - _fail mirrors the try and raises
            _fail(mirror, identity, ti, started_at, exc, pipeline_started=False)

        pipeline_started = False
        pipeline_done = False
        try:
            self._reserve(settings, mirror, identity, customer)
            mirror.record(run_event(identity, RunState.RUNNING, source="operator", started_at=started_at))
            pipeline_started = True
            rows = self._run_template(context, store, identity)
            summary = rows[0] if rows else {}
            pipeline_done = True
            # Inside the try: execution_timeout can fire while this insert is in flight (it may wait
            # up to INSERT_DEADLINE_SECONDS), and Airflow then fails the try although the COMPLETED
            # row may already be stored. The try's ending written below is later than COMPLETED, so
            # the mirror ends the try as Airflow does.
            mirror.record(
                run_event(
                    identity,
                    RunState.COMPLETED,
                    source="operator",
                    started_at=started_at,
                    ended_at=datetime.now(UTC),
                    details=summary,
                )
            )
        except AirflowSkipException:
            raise
        except (AirflowTaskTimeout, Exception) as exc:  # noqa: BLE001 - _fail mirrors the try and raises
            # AirflowTaskTimeout (a BaseException) is how execution_timeout interrupts execute: at the
            # quota gate, in the template, or in the final mirror write (the platform's time, not the
            # pipeline's: it had finished).
            _fail(
                mirror,
                identity,
                ti,
                started_at,
                exc,
                pipeline_started=pipeline_started and not pipeline_done,
                during="final mirror write" if pipeline_done else None,
            )
        return summary

    def _check_may_run(self, settings: Settings, mirror: RunStateMirror, identity: RunIdentity) -> Customer:
        """The config and its customer as the snapshot has them now, not as when the run was queued:
        a run of a config disabled or deleted since, or of a customer suspended or without a
        subscription in force, is SKIPPED with the reason (models.hold_reason, the rule the syncer
        pauses DAGs by). Returns the customer, for the quota gate."""
        from customer_pipelines.models import ConfigError, SkipReason, hold_reason
        from customer_pipelines.snapshot import Snapshot
        from customer_pipelines.snapshot_store import newest_snapshot_file

        with Snapshot.open_last_good(newest_snapshot_file(settings)) as snapshot:
            row = snapshot.config_by_dag_id(identity.dag_id)
            customer = snapshot.customer(self.customer_id)
        config = row.parse() if row is not None else None
        if isinstance(config, ConfigError):  # edited since into a row that cannot be a DAG: it is on its way out
            reason = SkipReason.CONFIG_INACTIVE
            details = {"config_state": "INVALID", "config_error": config.reason}
            why = f"config {self.config_id} is now invalid ({config.reason})"
        else:
            reason = hold_reason(config, customer)
            if reason is None:
                return customer
            details, why = self._why_held(reason, config, customer)
        _skip(mirror, identity, reason, details, f"{why}: pipeline not run")

    def _why_held(
        self, reason: SkipReason, config: PipelineConfig | None, customer: Customer | None
    ) -> tuple[dict[str, Any], str]:
        """The skip's details and message for a hold_reason."""
        from customer_pipelines.models import SkipReason

        if reason is SkipReason.CONFIG_INACTIVE:
            state = "DELETED" if config is None else "INACTIVE"
            return {"config_state": state}, f"config {self.config_id} is {state.lower()}"
        status = customer.status.value if customer else "MISSING"
        if reason is SkipReason.CUSTOMER_INACTIVE:
            return {"customer_status": status}, f"customer {self.customer_id} is {status}"
        return {"customer_status": status, "subscription_in_force": False}, (
            f"customer {self.customer_id} has no subscription in force"
        )

    def _reserve(self, settings: Any, mirror: Any, identity: Any, customer: Any, ledger: Any = None) -> None:
        """Take a quota unit, or skip the run (QUOTA_EXCEEDED). ``ledger``: the settings' ledger unless
        given (the tests give one on an injected clock)."""
        from customer_pipelines.models import SkipReason
        from customer_pipelines.runs.quota import QuotaExemptions, QuotaLedger

        if identity.run_type == "backfill" and identity.logical_date is not None:
            exempted_by = QuotaExemptions(settings).decided_by(identity.dag_id, identity.logical_date)
            if exempted_by is not None:
                self.log.info("backfill run not counted against the quota: exempted by %s", exempted_by)
                return
        # One unit per execution of the run: its retries share it, a clear or reprocessing takes a new one.
        # A scheduled run's first execution counts on its tick's day, wherever its start window (or a
        # slow queue) put its start; an execution again (a clear) counts on the day it runs.
        first_scheduled = identity.run_type == "scheduled" and not identity.clear_number
        tick = identity.logical_date if first_scheduled else None
        decision = (ledger or QuotaLedger(settings)).reserve(customer, identity.execution_key, tick=tick)
        if not decision.allowed:
            _skip(
                mirror,
                identity,
                SkipReason.QUOTA_EXCEEDED,
                {
                    "limit": decision.reason,
                    "used_today": decision.used_today,
                    "daily_limit": decision.daily_limit,
                    "used_this_month": decision.used_this_month,
                    "monthly_limit": decision.monthly_limit,
                },
                f"quota exceeded for {self.customer_id}: {decision.reason} "
                f"(today {decision.used_today}/{decision.daily_limit}, "
                f"month {decision.used_this_month}/{decision.monthly_limit})",
            )

    def _run_template(self, context: Any, store: Any, identity: Any) -> list[dict[str, Any]]:
        """The customer's pipeline: its template with its parameters, on the data plane."""
        from customer_pipelines.runs.failures import InvalidPipelineConfig
        from customer_pipelines.templates import TEMPLATES

        template = TEMPLATES.get(self.pipeline_template)
        if template is None:
            raise InvalidPipelineConfig(f"unknown pipeline_template {self.pipeline_template!r}")
        params = template.params_model.model_validate(self.parameters).model_dump()
        # The template works on the customers' data (the data plane); the mirror stays on the control plane.
        data_plane = store.for_plane("data")
        if store.settings.customer_credentials == "required":
            from customer_pipelines.bigquery.store import BigQueryStore
            from customer_pipelines.runs.credentials import GCP_CONN_TYPE, resolve_credentials

            # Part of the pipeline: a customer's missing credentials fail its run (and count toward
            # its auto-pause), never the platform's.
            credentials = resolve_credentials(self.customer_id, self.provider)
            if credentials.conn_type == GCP_CONN_TYPE:  # the customer's own identity on the data plane
                own = store.settings.model_copy(update={"data_gcp_conn_id": credentials.conn_id})
                data_plane = BigQueryStore(own, plane="data")
        return data_plane.query(
            template.sql_file,
            {
                "customer_id": self.customer_id,
                "provider": self.provider,
                "run_date": self.run_date(context),
                "run_key": identity.run_key,
                **params,
            },
        )

    def run_identity(self, context: Any) -> Any:
        from customer_pipelines.runs.mirror import RunIdentity

        dag_run = context["dag_run"]
        ti = context["ti"]
        return RunIdentity(
            config_id=self.config_id,
            customer_id=self.customer_id,
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            task_id=ti.task_id,
            try_number=ti.try_number,
            logical_date=_aware(context.get("logical_date")),
            scheduled_time=_aware(getattr(dag_run, "run_after", None)),
            run_type=getattr(dag_run, "run_type", None) or None,
            # Which execution of the run: a clear (or a backfill reprocessing it) raises it.
            clear_number=int(getattr(dag_run, "clear_number", 0) or 0),
        )

    def run_date(self, context: Any) -> Any:
        """The day a run processes: the day before its logical date, in the config's timezone
        (a 02:00 run aggregates the day that just ended)."""
        moment = _aware(context.get("logical_date")) or datetime.now(UTC)
        return (moment.astimezone(ZoneInfo(self.timezone)) - timedelta(days=1)).date()


def _fail(
    mirror: Any,
    identity: Any,
    ti: Any,
    started_at: datetime,
    exc: BaseException,
    *,
    pipeline_started: bool,
    during: str | None = None,
) -> NoReturn:
    """Mirror a failed try with whose failure it is (RETRYING when Airflow will retry it), then fail
    the task: at once (AirflowFailException) when no retry can fix it. Call it from an except block."""
    from customer_pipelines.runs.failures import bigquery_reason_of, classify_failure
    from customer_pipelines.runs.mirror import RunState, run_event

    timed_out = isinstance(exc, AirflowTaskTimeout)
    failure = classify_failure(exc, pipeline_started=pipeline_started, timed_out=timed_out)
    reason = bigquery_reason_of(exc)
    retry_planned = failure.retryable and (identity.try_number or 1) <= int(getattr(ti, "max_tries", 0) or 0)
    final = RunState.TIMEOUT if timed_out else RunState.FAILED
    mirror.record(
        run_event(
            identity,
            RunState.RETRYING if retry_planned else final,
            source="operator",
            started_at=started_at,
            ended_at=datetime.now(UTC),
            error=exc,
            error_type=failure.error_type.value,
            details={
                "retryable": failure.retryable,
                "exception": type(exc).__name__,
                **({"bigquery_reason": reason} if reason else {}),
                **({"during": during} if during else {}),
            },
        )
    )
    if not failure.retryable:
        raise AirflowFailException(f"{type(exc).__name__} (not retryable): {exc}") from exc
    raise exc


def _skip(mirror: Any, identity: Any, reason: Any, details: dict[str, Any], message: str) -> NoReturn:
    """Mirror the run as SKIPPED with its reason, then skip the task in Airflow."""
    from customer_pipelines.runs.mirror import RunState, run_event

    mirror.record(
        run_event(
            identity,
            RunState.SKIPPED,
            source="operator",
            skip_reason=reason,
            ended_at=datetime.now(UTC),
            details=details,
        )
    )
    raise AirflowSkipException(message)


def _aware(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
