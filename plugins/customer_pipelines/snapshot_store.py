"""The snapshot's generations in object storage, for processes that share no disk with the syncer.

The snapshot's writers (the syncer, the REST API and the command line: one host, one lock) publish
each new generation ``N`` as ``generations/<N>.sqlite.gz`` and its manifest ``generations/<N>.json``
(sha256, size, when), then point ``CURRENT`` at it: in that order, so ``CURRENT`` never names an
incomplete generation. Readers fetch: a DAG processor the newest one into its own snapshot file (its
DAG bundle's refresh, fleet/bundle.py); a Celery worker the very generation its task's DAG was parsed
from (the DAG run's bundle version) into a cache in its own state directory, once per generation.
A fetched file is checked against its manifest's sha256, then by SQLite's integrity check, before
anything reads it.

Generations published more than ``snapshot_store_keep_hours`` ago are deleted by the publisher; the
newest ``KEEP_NEWEST`` never are. Any fsspec URL works (``gs://`` with the pinned gcsfs, ``s3://``
with s3fs installed, ``file://`` for a mounted volume or the tests)."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
from contextlib import nullcontext, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from customer_pipelines.private_files import open_private, private_dir
from customer_pipelines.settings import ParseSettings
from customer_pipelines.snapshot import Snapshot, install_file, new_tmp_beside, refresh_lock

log = logging.getLogger(__name__)

KEEP_NEWEST = 10
"""Generations the store always keeps, however old."""
CACHE_KEEP = 8
"""Generations a worker keeps in its cache (the newest fetched): runs in flight use a few at most."""
CACHE_DIR = "snapshot-cache"
"""The worker's cache of fetched generations, in its state directory."""


_pinned: Path | None = None


def pinned_snapshot() -> Path | None:
    """The snapshot file a worker's DAG bundle pinned for the task this process runs (the
    generation its DAG was parsed from, fleet/bundle.py); None elsewhere."""
    return _pinned


def pin_snapshot(path: Path | None) -> None:
    global _pinned
    _pinned = path


class StoreError(RuntimeError):
    """The snapshot store could not be read or written, or holds a damaged generation."""


class GenerationMissing(StoreError):
    """The generation asked for is not in the store (never published, or deleted as too old)."""


@dataclass(frozen=True)
class Manifest:
    generation: int
    sha256: str
    size: int
    published_at: datetime

    def as_json(self) -> str:
        return json.dumps(
            {
                "generation": self.generation,
                "sha256": self.sha256,
                "size": self.size,
                "published_at": self.published_at.isoformat(),
            }
        )

    @classmethod
    def from_json(cls, text: bytes | str) -> Manifest:
        value = json.loads(text)
        return cls(
            int(value["generation"]),
            str(value["sha256"]),
            int(value["size"]),
            datetime.fromisoformat(value["published_at"]),
        )


class SnapshotStore:
    """One store URL: ``CURRENT`` and ``generations/`` under it."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)

    def _key(self, name: str) -> str:
        return f"{self.root}/{name}"

    @staticmethod
    def _name(generation: int) -> str:
        return f"generations/{generation:012d}"

    def current(self) -> int | None:
        """The newest generation published; None when nothing was."""
        try:
            return int(json.loads(self.fs.cat_file(self._key("CURRENT")))["generation"])
        except FileNotFoundError:
            return None
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"{self.url}/CURRENT is unreadable: {exc}") from exc

    def publish(self, snapshot_file: Path, generation: int, *, now: datetime | None = None) -> Manifest:
        """Upload this generation's file and manifest, then make it ``CURRENT``."""
        raw = snapshot_file.read_bytes()
        manifest = Manifest(generation, hashlib.sha256(raw).hexdigest(), len(raw), now or datetime.now(UTC))
        name = self._name(generation)
        self.fs.makedirs(self._key("generations"), exist_ok=True)
        self.fs.pipe_file(self._key(f"{name}.sqlite.gz"), gzip.compress(raw, compresslevel=6))
        self.fs.pipe_file(self._key(f"{name}.json"), manifest.as_json().encode())
        # Written aside, then moved: on a file system a reader never sees half of CURRENT (an object
        # store's put is atomic anyway).
        pending = self._key(f".CURRENT.{os.getpid()}.tmp")
        self.fs.pipe_file(pending, json.dumps({"generation": generation}).encode())
        self.fs.mv(pending, self._key("CURRENT"))
        return manifest

    def manifest(self, generation: int) -> Manifest:
        try:
            return Manifest.from_json(self.fs.cat_file(self._key(f"{self._name(generation)}.json")))
        except FileNotFoundError:
            raise GenerationMissing(f"snapshot generation {generation} is not in {self.url}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"manifest of generation {generation} in {self.url} is unreadable: {exc}") from exc

    def fetch(self, generation: int, dest: Path) -> Path:
        """Generation ``generation`` as a complete, owner-only file at ``dest`` (written beside it and
        renamed), its content checked against the manifest."""
        manifest = self.manifest(generation)
        try:
            raw = gzip.decompress(self.fs.cat_file(self._key(f"{self._name(generation)}.sqlite.gz")))
        except FileNotFoundError:
            raise GenerationMissing(f"snapshot generation {generation} is not in {self.url}") from None
        except (OSError, EOFError) as exc:
            raise StoreError(f"generation {generation} in {self.url} is damaged: {exc}") from exc
        digest = hashlib.sha256(raw).hexdigest()
        if digest != manifest.sha256 or len(raw) != manifest.size:
            raise StoreError(
                f"generation {generation} in {self.url} does not match its manifest "
                f"(sha256 {digest[:12]}… != {manifest.sha256[:12]}…)"
            )
        tmp = new_tmp_beside(dest)
        try:
            with open_private(tmp, "wb", exclusive=True) as fh:
                fh.write(raw)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    def generations(self) -> list[int]:
        try:
            names = self.fs.ls(self._key("generations"), detail=False)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            stem = str(name).rsplit("/", 1)[-1]
            if stem.endswith(".json") and stem[: -len(".json")].isdigit():
                found.append(int(stem[: -len(".json")]))
        return sorted(found)

    def prune(self, keep: timedelta, *, now: datetime | None = None) -> list[int]:
        """Delete generations published longer than ``keep`` ago, except the newest ``KEEP_NEWEST``;
        returns those deleted. The file goes first, the manifest last (a generation is listed by its
        manifest, so a prune cut short is finished by the next one)."""
        now = now or datetime.now(UTC)
        deleted = []
        for generation in self.generations()[:-KEEP_NEWEST]:
            try:
                if now - self.manifest(generation).published_at <= keep:
                    continue
            except GenerationMissing:
                continue
            name = self._name(generation)
            for suffix in (".sqlite.gz", ".json"):
                with suppress(FileNotFoundError):
                    self.fs.rm_file(self._key(name + suffix))
            deleted.append(generation)
        return deleted


def store_of(settings: ParseSettings) -> SnapshotStore | None:
    return SnapshotStore(settings.snapshot_store_url) if settings.snapshot_store_url else None


def local_generation(path: Path) -> int | None:
    """The generation of the snapshot file at ``path`` (not its ``.prev``); None when unreadable."""
    if not path.exists():
        return None
    try:
        with Snapshot(path) as snapshot:
            return snapshot.generation
    except Exception:  # noqa: BLE001 - a damaged file is one to replace
        return None


def publish_newest(settings: ParseSettings, *, now: datetime | None = None) -> int | None:
    """Publish the local snapshot's generation unless the store has it (or a newer one); returns
    the generation published. The writers call this under the snapshot's refresh lock, after a
    write and before they ask for parses, so a DAG processor refreshing its bundle finds it."""
    store = store_of(settings)
    if store is None:
        return None
    generation = local_generation(settings.snapshot_file)
    if generation is None:
        return None
    current = store.current()
    if current is not None and current >= generation:
        if current > generation:
            log.warning(
                "snapshot store %s holds generation %d, newer than this host's %d: not published "
                "(the next sync adopts the store's and refreshes it)",
                store.url,
                current,
                generation,
            )
        return None
    manifest = store.publish(settings.snapshot_file, generation, now=now)
    log.info("snapshot generation %d published to %s (%d bytes)", generation, store.url, manifest.size)
    deleted = store.prune(timedelta(hours=settings.snapshot_store_keep_hours), now=now)
    if deleted:
        log.info("snapshot store: %d old generation(s) deleted (%d..%d)", len(deleted), deleted[0], deleted[-1])
    return generation


def fetch_newest(settings: ParseSettings, *, locked: bool = False) -> int | None:
    """Make the store's newest generation this process's snapshot file (a DAG processor's refresh,
    or a syncer whose state directory is new or older than the store); returns the local generation
    afterwards (None: nothing published yet and nothing local). ``locked``: the caller holds the
    snapshot's refresh lock already (the syncer's round)."""
    store = store_of(settings)
    local = local_generation(settings.snapshot_file)
    if store is None:
        return local
    current = store.current()
    if current is None or (local is not None and local >= current):
        return local
    path = settings.snapshot_file
    private_dir(path.parent)
    # Several processes of one host may fetch at once (a worker's tasks): one installs at a time.
    with nullcontext() if locked else refresh_lock(path, timeout=60):
        local = local_generation(path)
        if local is not None and local >= current:
            return local
        tmp = store.fetch(current, new_tmp_beside(path))
        try:
            install_file(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    log.info("snapshot generation %d fetched from %s", current, store.url)
    return current


def newest_snapshot_file(settings: ParseSettings) -> Path:
    """The snapshot file holding the configs as they are now: with a store, this process's copy
    brought up to the store's newest generation first (a worker checking that a run may still run);
    if the store cannot be read, the copy as it is, with a warning."""
    if settings.snapshot_store_url:
        try:
            fetch_newest(settings)
        except Exception as exc:  # noqa: BLE001 - the local copy is the best left
            log.warning("snapshot store %s unreadable (%s): using this host's copy", settings.snapshot_store_url, exc)
    return settings.snapshot_file


def cached_generation(settings: ParseSettings, generation: int) -> Path:
    """The file of this generation in this worker's cache, fetched on first use; when the store no
    longer has it (deleted as too old), the newest generation's, with a warning."""
    store = store_of(settings)
    if store is None:
        raise StoreError("CP_SNAPSHOT_STORE_URL is not set: no store to fetch a generation from")
    cache = private_dir(settings.state_dir / CACHE_DIR)
    path = cache / f"configs-{generation:012d}.sqlite"
    if path.exists():
        return path
    try:
        store.fetch(generation, path)
    except GenerationMissing:
        newest = store.current()
        if newest is None:
            raise
        log.warning(
            "snapshot generation %d is no longer in %s: this task runs on the newest, %d", generation, store.url, newest
        )
        return cached_generation(settings, newest)
    _trim_cache(cache)
    return path


def _trim_cache(cache: Path) -> None:
    files = sorted(cache.glob("configs-*.sqlite"))
    for old in files[:-CACHE_KEEP]:
        for path in (old, *cache.glob(f".{old.name}.*")):
            path.unlink(missing_ok=True)
