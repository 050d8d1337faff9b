"""The DAGs folder as an Airflow DAG bundle whose version is the config snapshot's generation, for
DAG processors and Celery workers that share no disk with the syncer (``CP_SNAPSHOT_STORE_URL``).

Airflow 3 records, for every DAG, the bundle version it was parsed from, pins each DAG run to it, and
hands it to the worker that runs the run's tasks (AIP-66): that is exactly "run a task against the
snapshot its DAG was parsed from". The DAG files are code, the same in every version (shipped with the
image); the snapshot generation is what changes, fetched from the store (snapshot_store.py):

- in the DAG processor, ``refresh()`` makes the store's newest generation the processor's own snapshot
  file and ``get_current_version()`` names it; Airflow records that version with each file's parse.
  A parse request names a changed file: ``fleet.parsing`` asks for a refresh of the bundle in the same
  loop, before the parse starts, so the parse reads the generation that holds the change;
- on a worker, Airflow builds the bundle with the DAG run's version: ``initialize()`` fetches that
  generation into the worker's cache (once per generation) and pins it, and the factory builds the
  task's DAG from it (``snapshot_store.pinned_snapshot``).

Without a store every process reads one snapshot file on a shared disk (Airflow's LocalDagBundle)."""

from __future__ import annotations

import logging
from typing import Any

from airflow.dag_processing.bundles.base import BundleVersion
from airflow.dag_processing.bundles.local import LocalDagBundle

log = logging.getLogger(__name__)


class SnapshotDagBundle(LocalDagBundle):
    """A local DAGs folder, versioned by the config snapshot generation published to the store."""

    supports_versioning = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._generation: int | None = None

    def initialize(self) -> None:
        from customer_pipelines.settings import get_parse_settings
        from customer_pipelines.snapshot_store import cached_generation, fetch_newest, local_generation, pin_snapshot

        settings = get_parse_settings()
        if self.version is None:
            # The DAG processor (or a run pinned to no version): the newest generation; the store out
            # of reach, the copy already here (a restarted processor keeps serving its DAGs).
            try:
                self._generation = fetch_newest(settings)
            except Exception:
                self._generation = local_generation(settings.snapshot_file)
                if self._generation is None:
                    raise
                log.exception("snapshot store unreadable: serving this host's generation %d", self._generation)
            pin_snapshot(None)
        else:
            generation = _generation_of(self.version)
            pin_snapshot(cached_generation(settings, generation))
            self._generation = generation
        super().initialize()

    def refresh(self) -> None:
        from customer_pipelines.settings import get_parse_settings
        from customer_pipelines.snapshot_store import fetch_newest

        if self.version is not None:
            raise ValueError(f"bundle {self.name} is pinned to generation {self.version}: it cannot be refreshed")
        self._generation = fetch_newest(get_parse_settings())

    def get_current_version(self) -> BundleVersion | None:
        generation = self._generation if self.version is None else _generation_of(self.version)
        return None if generation is None else BundleVersion(version=str(generation))


def _generation_of(version: str) -> int:
    try:
        return int(version)
    except ValueError:
        raise ValueError(f"bundle version {version!r} is not a snapshot generation") from None
