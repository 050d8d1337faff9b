"""The operator every customer DAG runs: checks the customer may run, runs the config's template,
and mirrors each state change of the run into BigQuery.

Import-light on purpose (the factory imports it at parse time for 50,000 DAGs): BigQuery and the
store are imported when a task executes."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException, AirflowTaskTimeout


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
        super().__init__(**kwargs)
        self.timezone = timezone
        self.config_id = config_id
        self.customer_id = customer_id
        self.provider = provider
        self.pipeline_template = pipeline_template
        self.parameters = dict(parameters or {})

    def execute(self, context: Any) -> dict[str, Any]:
        from customer_pipelines.mirror import RunState, RunStateMirror, SkipReason, run_event
        from customer_pipelines.settings import get_settings
        from customer_pipelines.snapshot import Snapshot
        from customer_pipelines.store import BigQueryStore

        settings = get_settings()
        store = BigQueryStore(settings)
        mirror = RunStateMirror(store, settings.spool_dir)
        identity = self.run_identity(context)
        ti = context["ti"]
        started_at = _aware(getattr(ti, "start_date", None)) or datetime.now(UTC)

        try:
            with Snapshot.open_last_good(settings.snapshot_file) as snapshot:
                customer = snapshot.customer(self.customer_id)
        except (AirflowTaskTimeout, Exception) as exc:  # noqa: BLE001 - _fail mirrors the try and raises
            _fail(mirror, identity, ti, started_at, exc, pipeline_started=False)
        if customer is None or not customer.is_active:
            status = customer.status.value if customer else "MISSING"
            _skip(
                mirror,
                identity,
                SkipReason.CUSTOMER_INACTIVE,
                {"customer_status": status},
                f"customer {self.customer_id} is {status}: pipeline not run",
            )

        pipeline_started = False
        try:
            self._reserve(settings, mirror, identity, customer)
            mirror.record(run_event(identity, RunState.RUNNING, source="operator", started_at=started_at))
            pipeline_started = True
            rows = self._run_template(context, store, identity)
        except AirflowSkipException:
            raise
        except (AirflowTaskTimeout, Exception) as exc:  # noqa: BLE001 - _fail mirrors the try and raises
            # AirflowTaskTimeout (a BaseException) is how execution_timeout interrupts execute: at the
            # quota gate as well as in the template.
            _fail(mirror, identity, ti, started_at, exc, pipeline_started=pipeline_started)
        summary = rows[0] if rows else {}
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
        return summary

    def _reserve(self, settings: Any, mirror: Any, identity: Any, customer: Any) -> None:
        """Take a quota unit, or skip the run (QUOTA_EXCEEDED)."""
        from customer_pipelines.mirror import SkipReason
        from customer_pipelines.quota import QuotaLedger

        decision = QuotaLedger(settings).reserve(customer, identity.run_key)
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
        from customer_pipelines.failures import InvalidPipelineConfig
        from customer_pipelines.templates import TEMPLATES

        template = TEMPLATES.get(self.pipeline_template)
        if template is None:
            raise InvalidPipelineConfig(f"unknown pipeline_template {self.pipeline_template!r}")
        params = template.params_model.model_validate(self.parameters).model_dump()
        # The template works on the customers' data (the data plane); the mirror stays on the control plane.
        return store.for_plane("data").query(
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
        from customer_pipelines.mirror import RunIdentity

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
            run_type=str(getattr(dag_run, "run_type", "") or "") or None,
        )

    def run_date(self, context: Any) -> Any:
        """The day a run processes: the day before its logical date, in the config's timezone
        (a 02:00 run aggregates the day that just ended)."""
        moment = _aware(context.get("logical_date")) or datetime.now(UTC)
        return (moment.astimezone(ZoneInfo(self.timezone)) - timedelta(days=1)).date()


def _fail(
    mirror: Any, identity: Any, ti: Any, started_at: datetime, exc: BaseException, *, pipeline_started: bool
) -> NoReturn:
    """Mirror a failed try with whose failure it is (RETRYING when Airflow will retry it), then fail
    the task: at once (AirflowFailException) when no retry can fix it. Call it from an except block."""
    from customer_pipelines.failures import bigquery_reason_of, classify_failure
    from customer_pipelines.mirror import RunState, run_event

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
            },
        )
    )
    if not failure.retryable:
        raise AirflowFailException(f"{type(exc).__name__} (not retryable): {exc}") from exc
    raise exc


def _skip(mirror: Any, identity: Any, reason: Any, details: dict[str, Any], message: str) -> NoReturn:
    """Mirror the run as SKIPPED with its reason, then skip the task in Airflow."""
    from customer_pipelines.mirror import RunState, run_event

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
