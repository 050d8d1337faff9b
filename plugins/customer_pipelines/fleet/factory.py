"""The DAG factory: snapshot rows -> validated configs -> one Airflow DAG per config.

Never raises to the DAG file: a bad row becomes a ConfigError (reported by the errors DAG file and
the logs) and every other row still becomes its DAG. On a worker running one task, only the DAG of
that task is built (Airflow's parsing context)."""

from __future__ import annotations

import gc
import logging
import re
from collections.abc import Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, AsyncCallback, DeadlineAlert, DeadlineReference, get_parsing_context

from customer_pipelines.fleet.shards import shard_of
from customer_pipelines.fleet.timetables import CustomerCronTimetable
from customer_pipelines.models import (
    ConfigError,
    Customer,
    PipelineConfig,
    Plan,
    SkipReason,
    hold_reason,
    is_runnable,
    pool_name_for,
    printable,
)
from customer_pipelines.runs.operators import CustomerPipelineOperator
from customer_pipelines.runs.sla import record_sla_breach
from customer_pipelines.settings import ParseSettings, Settings, get_parse_settings, settings_problems
from customer_pipelines.snapshot import ConfigRow, FileIdentity, Snapshot, SnapshotError, config_id_key
from customer_pipelines.snapshot_store import pinned_snapshot
from customer_pipelines.templates import TEMPLATES
from customer_pipelines.ui import customer_page_path

log = logging.getLogger(__name__)

FLEET_TAG = "customer-pipelines"
TASK_ID = "run_pipeline"


@dataclass
class FactoryResult:
    dags: dict[str, DAG] = field(default_factory=dict)
    errors: list[ConfigError] = field(default_factory=list)
    snapshot_error: str | None = None


PLAN_TIEBREAK = {Plan.STARTER: 0, Plan.PROFESSIONAL: 1, Plan.SCALE: 2, Plan.ENTERPRISE: 3}


def priority_weight_for(config: PipelineConfig, customer: Customer | None) -> int:
    """Config priority 1-10 -> Airflow priority_weight, used with weight_rule="absolute".

    Priority dominates (steps of 10); within one priority a larger plan goes first (+0..3), so a
    plan can never overtake a higher priority. Equal weights start in Airflow's own order."""
    plan_bonus = PLAN_TIEBREAK.get(customer.plan, 0) if customer and customer.plan else 0
    return config.priority * 10 + plan_bonus


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
DOC_VALUE_MAX = 200


def md_code(value: object, *, in_table: bool = True) -> str:
    """A customer-supplied value as one inline code span: never a link, image, HTML or heading,
    whatever it holds; newlines and control characters become spaces, long values are cut, and a
    ``|`` cannot end a table cell early."""
    text = value if isinstance(value, str) else str(value)
    # Most values (ids, names, crons) need none of the rewriting: one C-level scan decides, with the
    # same result (every character _CONTROL matches is one isprintable() rejects).
    if len(text) <= DOC_VALUE_MAX and text.isprintable() and "`" not in text and not (in_table and "|" in text):
        text = text.strip()
        return f"` {text} `" if text else "-"
    return _md_code_rewritten(text, in_table=in_table)


def _md_code_rewritten(text: str, *, in_table: bool) -> str:
    text = _CONTROL.sub(" ", text).strip()
    if len(text) > DOC_VALUE_MAX:
        text = text[:DOC_VALUE_MAX] + "..."
    if in_table:
        text = text.replace("|", "\\|")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {text} {fence}" if text else "-"


HELD_BECAUSE = {
    SkipReason.CONFIG_INACTIVE: "the config is disabled (`is_active=false`)",
    SkipReason.CUSTOMER_INACTIVE: "the customer is not ACTIVE",
    SkipReason.NO_SUBSCRIPTION: "the customer has no subscription in force (expired or missing)",
}
"""What the DAG's doc says when its runs are held (paused by the syncer, skipped if one starts)."""


def _doc_md(config: PipelineConfig, customer: Customer | None) -> str:
    """The DAG's docs. Every customer-supplied value (names, ids, parameters) is a code span (see
    md_code), so a row cannot add links, images, HTML, rows or comments to what operators read."""
    template = TEMPLATES[config.pipeline_template]
    retry = config.retry_config
    company = md_code(customer.company_name, in_table=False) if customer else "(unknown customer)"
    plan = customer.plan.value if customer and customer.plan else "none in force"
    status = customer.status.value if customer else "MISSING"
    held = hold_reason(config, customer)
    # Parameters are shown: they are validated against the template's model, which holds no secrets
    # (credentials come from Airflow connections, never from config rows).
    params = ", ".join(f"{md_code(k)}={md_code(repr(v))}" for k, v in sorted(config.parameters.items()))
    return "\n".join(
        [
            f"## {md_code(config.display_name or config.config_id, in_table=False)}",
            "",
            f"Customer {company} ({md_code(config.customer_id, in_table=False)}, plan {plan}, status {status}).",
            "",
            # The id is a validated slug ([a-z0-9_-]): safe in a link's target.
            f"[The customer on the fleet page]({customer_page_path(config.customer_id)}) · "
            f"[its DAGs](/dags?tags=customer%3A{config.customer_id}) · "
            f"[its runs](/dag_runs?dag_id_pattern={config.customer_id}.)",
            "",
            *([f"**Not running: {HELD_BECAUSE[held]}** (`{held.value}`).", ""] if held else []),
            "| | |",
            "|---|---|",
            f"| config | {md_code(config.config_id)} (version {config.version}) |",
            f"| provider / domain | {config.provider.value} / {config.domain.value} |",
            f"| template | `{template.name}`: {template.description} |",
            f"| schedule | {md_code(config.schedule_cron)} in {md_code(config.timezone)} |",
            *(
                [
                    f"| start window | {config.start_window_minutes} min: runs start "
                    f"{int(config.start_offset.total_seconds())} s after their tick |"
                ]
                if config.start_window_minutes
                else []
            ),
            f"| priority | {config.priority} (priority_weight {priority_weight_for(config, customer)}) |",
            f"| retries | {retry.max_attempts} attempts, {retry.base_delay_minutes} min x{retry.backoff_multiplier} |",
            f"| max duration | {config.max_execution_duration_minutes or '-'} min |",
            f"| SLA | {config.sla_breach_threshold_minutes or '-'} min |",
            f"| missed ticks run after an outage | {config.auto_backfill_ticks or 1} latest |",
            f"| parameters | {params or '(defaults)'} |",
            f"| active | {config.is_active} |",
        ]
    )


def build_dag(
    config: PipelineConfig,
    customer: Customer | None,
    settings: ParseSettings,
    *,
    runnable_since: datetime | None = None,
) -> DAG:
    """The config's DAG. ``runnable_since`` (from the snapshot) anchors its first tick; None means
    the config must not run, and the DAG has no next run."""
    retry = config.retry_config
    default_args: dict[str, Any] = {
        "owner": config.customer_id,
        "pool": pool_name_for(config.customer_id, settings.pool_prefix),
        "priority_weight": priority_weight_for(config, customer),
        "weight_rule": "absolute",
        "retries": retry.max_attempts - 1,
        "retry_delay": timedelta(minutes=retry.base_delay_minutes),
        "retry_exponential_backoff": retry.backoff_multiplier if retry.backoff_multiplier > 1 else 0,
        "max_retry_delay": timedelta(minutes=settings.max_retry_delay_minutes),
    }
    if config.max_execution_duration_minutes:
        default_args["execution_timeout"] = timedelta(minutes=config.max_execution_duration_minutes)
    deadline = None
    if config.sla_breach_threshold_minutes:
        deadline = DeadlineAlert(
            reference=DeadlineReference.DAGRUN_QUEUED_AT,
            interval=timedelta(minutes=config.sla_breach_threshold_minutes),
            callback=AsyncCallback(
                record_sla_breach,
                kwargs={
                    "config_id": config.config_id,
                    "customer_id": config.customer_id,
                    "threshold_minutes": config.sla_breach_threshold_minutes,
                },
            ),
        )
    dag = DAG(
        dag_id=config.dag_id,
        # The first tick is the first at or after runnable_since (see timetables.py); ticks missed
        # before it are recovered by backfills, never fired by surprise.
        schedule=CustomerCronTimetable(
            config.schedule_cron,
            timezone=config.timezone,
            runnable_since=runnable_since,
            auto_backfill_ticks=config.auto_backfill_ticks,
            start_offset=config.start_offset,
        ),
        catchup=False,
        max_active_runs=1,
        is_paused_upon_creation=not is_runnable(config, customer),
        tags=[
            FLEET_TAG,
            f"customer:{config.customer_id}",
            f"provider:{config.provider.value}",
            f"domain:{config.domain.value}",
            f"template:{config.pipeline_template}",
        ],
        description=f"{config.provider.value} {config.domain.value} pipeline of {config.customer_id}",
        doc_md=_doc_md(config, customer),
        default_args=default_args,
        deadline=deadline,
    )
    with dag:
        CustomerPipelineOperator(
            task_id=TASK_ID,
            config_id=config.config_id,
            customer_id=config.customer_id,
            provider=config.provider.value,
            pipeline_template=config.pipeline_template,
            parameters=dict(config.parameters),
            timezone=config.timezone,
        )
    return dag


def duplicate_config_errors(snapshot: Snapshot) -> list[ConfigError]:
    """Rows rejected because an older row of the same customer has their config_id, or the same
    but for letter case (see snapshot.config_id_key)."""
    errors = []
    duplicates = snapshot.duplicate_configs()
    kept_ids = snapshot.config_ids_by_key({customer_id for customer_id, _ in duplicates})
    for customer_id, config_id in duplicates:
        kept = kept_ids.get((customer_id, config_id_key(config_id)))
        if kept is None or kept == config_id:
            reason = "config_id: duplicate of an older config of this customer; this row is ignored"
        else:
            reason = (
                f"config_id: differs only in letter case from the older config {printable(kept)} of this "
                "customer; this row is ignored"
            )
        errors.append(ConfigError(config_id=config_id, customer_id=customer_id, reason=reason))
    return errors


def no_such_customer(config: PipelineConfig) -> ConfigError:
    return ConfigError(
        config_id=config.config_id, customer_id=config.customer_id, reason="customer_id: no such customer"
    )


def build_dags(
    snapshot: Snapshot,
    settings: ParseSettings | None = None,
    *,
    only_dag_id: str | None = None,
    shard: int | None = None,
    shards: int = 1,
) -> FactoryResult:
    """The DAGs of the whole snapshot, of one shard, or (``only_dag_id``, a worker) of one config.
    Customers are read with their configs (a shard reads its own in one query, a worker its one),
    and the duplicates report belongs to the whole-fleet build (the errors file), not to every shard."""
    settings = settings or get_parse_settings()
    result = FactoryResult()
    if only_dag_id is not None:
        # Only in its own shard file: a parse of the whole folder under one DAG's parsing context
        # (`airflow dags test`) must not see it defined by every shard (Airflow would report the
        # duplicate as an import error in the others and mark their DAGs stale).
        found = (
            snapshot.config_by_dag_id(only_dag_id) if shard is None or shard_of(only_dag_id, shards) == shard else None
        )
        rows: Iterable[ConfigRow] = [found] if found else []
    else:
        # Read as built, not listed first: a row and its parsed config are garbage once its DAG is.
        rows = snapshot.configs(shard=shard, shards=shards)
    if only_dag_id is None and shard is None:
        result.errors += duplicate_config_errors(snapshot)
    customers: dict[str, Customer | None]
    if only_dag_id is not None:
        customers = {}  # its one customer, read below
    elif shard is None:
        customers = dict(snapshot.customers())
    else:
        customers = dict(snapshot.customers_of_shard(shard, shards))
    seen: set[str] = set()
    for config_row in rows:
        parsed = config_row.parse()
        if isinstance(parsed, ConfigError):
            result.errors.append(parsed)
            continue
        if only_dag_id is not None:
            customers[parsed.customer_id] = snapshot.customer(parsed.customer_id)
        customer = customers.get(parsed.customer_id)
        if customer is None:
            result.errors.append(no_such_customer(parsed))
            continue
        if parsed.dag_id in seen:
            result.errors.append(
                ConfigError(config_id=parsed.config_id, customer_id=parsed.customer_id, reason="dag_id: duplicate")
            )
            continue
        try:
            result.dags[parsed.dag_id] = build_dag(parsed, customer, settings, runnable_since=config_row.runnable_since)
        except Exception as exc:  # noqa: BLE001 - one config must never hide the others
            result.errors.append(
                ConfigError(config_id=parsed.config_id, customer_id=parsed.customer_id, reason=f"dag: {exc}")
            )
        seen.add(parsed.dag_id)
    return result


@contextmanager
def collection_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a file's DAGs are built. Each collection of
    the oldest generation walks every object alive, so building thousands of DAGs, each a few
    hundred objects that all stay alive, walks the DAGs built so far again and again: a fifth to
    a third of the build at 10,000 configs (bench/factory_cost.py). What the build discards is
    freed by reference counting; the little cyclic garbage it leaves is collected once the
    collector runs again, after the build (the DAG processor's parse of a file is a short-lived
    process anyway)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_SWAPS_FOLLOWED = 3
"""How many snapshot swaps during one parse the parse follows before it publishes what it built."""


def load_fleet(
    snapshot_path: Path | None = None,
    *,
    shard: int | None = None,
    shards: int = 1,
    settings: ParseSettings | None = None,
) -> FactoryResult:
    """Build the DAGs of a DAG file from the last good snapshot; never raises (a DAG file that
    raises hides every DAG it defines)."""
    try:
        settings = settings or get_parse_settings()
        path = snapshot_path or pinned_snapshot() or settings.snapshot_file
        only_dag_id = get_parsing_context().dag_id
        for _ in range(_SWAPS_FOLLOWED + 1):
            opened = FileIdentity.of(path)
            with Snapshot.open_last_good(path) as snapshot, collection_paused():
                result = build_dags(snapshot, settings, only_dag_id=only_dag_id, shard=shard, shards=shards)
            # A refresh swapped a new generation in while this parse built from the old one: its
            # parse request may have been dropped (Airflow drops a request for a file it is parsing
            # at that moment), so this parse builds again from the new one rather than publish the old.
            if only_dag_id is not None or FileIdentity.of(path) == opened:
                break
    except SnapshotError as exc:
        log.error("customer pipelines: %s; no customer DAGs are built until a snapshot is refreshed", exc)
        return FactoryResult(snapshot_error=str(exc))
    except Exception as exc:
        log.exception("customer pipelines: factory failed")
        return FactoryResult(snapshot_error=f"factory failed: {exc}")
    for error in result.errors:
        log.warning("invalid pipeline config: %s", error)
    return result


def register_dags(namespace: MutableMapping[str, Any], **kwargs: Any) -> FactoryResult:
    """Put the fleet's DAGs into a DAG file's globals (how Airflow finds them)."""
    result = load_fleet(**kwargs)
    namespace.update(result.dags)
    return result


class InvalidPipelineConfigs(Exception):
    """Raised by the errors DAG file so Airflow lists bad configs among its import errors."""


def raise_config_errors(snapshot_path: Path | None = None, settings: ParseSettings | None = None) -> None:
    """Validate every row of the snapshot; raise one readable error listing the bad ones.

    Used by a DAG file that defines no DAG, so raising hides nothing: Airflow's "DAG Import Errors"
    panel, which operators watch, shows each bad config with its reason."""
    if get_parsing_context().dag_id is not None:
        return  # a worker running one task never needs this report
    problems: list[str] = [] if settings else settings_problems(Settings)
    settings = settings or get_parse_settings()
    path = snapshot_path or settings.snapshot_file
    try:
        with Snapshot.open_last_good(path) as snapshot:
            customers = snapshot.customers()
            problems += [str(error) for error in duplicate_config_errors(snapshot)]
            for config_row in snapshot.configs():
                parsed = config_row.parse()
                if isinstance(parsed, ConfigError):
                    problems.append(str(parsed))
                elif parsed.customer_id not in customers:
                    problems.append(str(no_such_customer(parsed)))
            if snapshot.path != path:
                problems.insert(0, f"snapshot {path} is unreadable; serving the previous one ({snapshot.path})")
    except SnapshotError as exc:
        problems.append(str(exc))
    if problems:
        raise InvalidPipelineConfigs(
            f"{len(problems)} customer pipeline problem(s); the other configs' DAGs are unaffected:\n"
            + "\n".join(f"- {p}" for p in problems)
        )
