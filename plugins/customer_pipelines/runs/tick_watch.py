"""The syncer's tick check: every round, the runnable configs' recent ticks from Airflow's metadata
database, alerting a tick missed with no cause it can name (``TICK_MISSED``, once per tick: a
scheduling defect, such as a first tick lost between two parses, shows up before a customer
notices) and a late start (``LATE_START``, once per episode: it ends when the config has no late
tick any more).

Incremental, since the syncer process keeps one ``TickWatch`` across rounds: the first round checks
the last ``tick_check_hours``; later rounds only from the previous round's ``now - late_after`` (less a
margin), since every older tick was then final (ran, skipped or missed) or late, and a late tick is
carried over (``pending``) until it ran or turned missed. 5,000 configs x a day of */5 ticks is
1.4 million ticks: once at start, not every round."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from customer_pipelines.models import PipelineConfig
from customer_pipelines.runs.failure_policy import Alert, Notifier, notifier_from_settings
from customer_pipelines.runs.tick_history import (
    ConfigTicks,
    EvidenceReader,
    Window,
    fleet_ticks,
    read_fleet_evidence,
)
from customer_pipelines.runs.ticks import Outcome, TickRecord
from customer_pipelines.settings import Settings

log = logging.getLogger(__name__)

WATERMARK_MARGIN = timedelta(minutes=2)
"""Re-read this much before the last round's final ticks: clock skew between the syncer and the
scheduler, and a run row committed just after the round read."""


@dataclass
class TickCheck:
    """One round's new findings: (config, tick) pairs."""

    missed: list[tuple[PipelineConfig, TickRecord]] = field(default_factory=list)
    """Ticks newly missed with no cause (Outcome.MISSED, Cause.NO_RUN)."""
    late: list[tuple[PipelineConfig, TickRecord]] = field(default_factory=list)
    """Configs newly late (a new episode), with their earliest late tick."""


class TickWatch:
    """Kept across the syncer's rounds: the watermark, the late ticks carried over, the ticks already
    alerted as missed and the configs in a late episode (in memory: a restarted syncer checks the
    whole ``tick_check_hours`` again and may alert a missed tick a second time)."""

    def __init__(
        self, settings: Settings, *, notifier: Notifier | None = None, read: EvidenceReader = read_fleet_evidence
    ) -> None:
        self.settings = settings
        self.notifier = notifier
        self.read = read
        self.watermark: datetime | None = None
        self.pending: dict[str, datetime] = {}
        """dag_id -> its earliest tick still late (read again until it ran or turned missed)."""
        self.alerted_missed: set[tuple[str, datetime]] = set()
        self.late: set[str] = set()
        """dag_ids in a late episode."""

    def check(
        self, configs: Sequence[PipelineConfig], anchors: Mapping[str, datetime], *, session: Any, now: datetime
    ) -> TickCheck:
        """One round over the runnable ``configs`` (the caller filters; ``anchors``: dag_id -> when it
        became runnable). The state changes only when the round completes: a failed read is retried
        from the same watermark next round."""
        oldest = now - timedelta(hours=self.settings.tick_check_hours)
        since = max(self.watermark or oldest, oldest)
        pending = {dag_id: tick for dag_id, tick in self.pending.items() if tick >= oldest}
        results = fleet_ticks(
            configs,
            Window(since, now),
            session,
            settings=self.settings,
            now=now,
            anchors=anchors,
            pending=pending,
            read=self.read,
        )
        found = TickCheck()
        missed = {(r.config.dag_id, rec.tick): (r.config, rec) for r in results for rec in r.unexplained()}
        late = {r.config.dag_id: (r.config, first) for r in results if (first := _first_late(r)) is not None}
        found.missed = [pair for key, pair in sorted(missed.items()) if key not in self.alerted_missed]
        found.late = [pair for dag_id, pair in sorted(late.items()) if dag_id not in self.late]

        # A tick is final once its run is late: late_after after the tick plus its start offset.
        late_after = timedelta(minutes=self.settings.late_after_minutes)
        longest_offset = max((c.start_offset for c in configs), default=timedelta(0))
        self.watermark = now - late_after - longest_offset - WATERMARK_MARGIN
        self.pending = {dag_id: record.tick for dag_id, (_, record) in late.items() if record.tick < self.watermark}
        # A tick older than every start of the next round can no longer be read again.
        floor = min([self.watermark, *self.pending.values()])
        self.alerted_missed = {key for key in self.alerted_missed | set(missed) if key[1] >= floor}
        self.late = set(late)
        for config, record in found.missed:
            self._alert(
                "TICK_MISSED", config, record, "missed: no run, though a scheduler was up (a scheduling defect)"
            )
        for config, record in found.late:
            minutes = (now - record.tick).total_seconds() / 60
            self._alert("LATE_START", config, record, f"not started {minutes:.0f} min after it")
        return found

    def _alert(self, kind: str, config: PipelineConfig, record: TickRecord, what: str) -> None:
        tick = f"{record.tick.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
        if config.timezone != "UTC":
            tick += f" ({record.tick.astimezone(ZoneInfo(config.timezone)):%Y-%m-%d %H:%M} {config.timezone})"
        message = f"config {config.config_id} of {config.customer_id}: tick {tick} {what}; cause {record.cause}"
        log.warning("%s: %s", kind, message)
        alert = Alert(
            level=kind,
            config_id=config.config_id,
            customer_id=config.customer_id,
            consecutive_failures=0,
            message=message,
        )
        try:
            (self.notifier or notifier_from_settings(self.settings))(alert)
        except Exception:  # logged above; one failing notifier call must not drop the others
            log.exception("notifier failed for %s alert of %s", kind, config.dag_id)


def _first_late(ticks: ConfigTicks) -> TickRecord | None:
    return next((r for r in ticks.records if r.outcome is Outcome.LATE), None)
