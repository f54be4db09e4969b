"""Backup and restore of the embedded default: every SQLite store of a config.

``streetsense db backup`` copies each database with SQLite's online backup API,
so it runs beside a working controller and each copy is consistent (the WAL
included); every copy is checked with ``PRAGMA integrity_check`` and listed
with its SHA-256 in ``manifest.json``. ``streetsense db restore`` refuses while
a controller holds the data folder, checks every file against the manifest
before touching anything, then writes each database back through the same
API. A state database in PostgreSQL is not in the backup (``pg_dump`` is the
tool for it); the manifest says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from controller.config import LoadedConfig
from controller.data_lock import holder_of
from controller.state.database import database_url, sqlite_file
from controller.state.legacy import legacy_files

MANIFEST = "manifest.json"
FORMAT = 1


class BackupError(Exception):
    """A backup or restore cannot go ahead; the message says why and what to do."""


@dataclass(frozen=True)
class StoreFile:
    """One SQLite database of the controller, by what it holds."""

    name: str
    path: Path


@dataclass(frozen=True)
class BackedUp:
    """A database in a backup: its file there, size and digest."""

    name: str
    file: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What a backup holds and where it came from."""

    format: int
    city: str
    created_at: float
    data_dir: str
    stores: list[BackedUp]
    #: Stores the backup does not hold, each with the reason (a server database).
    not_included: dict[str, str]


def sqlite_stores(loaded: LoadedConfig) -> tuple[list[StoreFile], dict[str, str]]:
    """The config's SQLite databases, and the stores that live elsewhere."""
    cfg = loaded.config
    stores: list[StoreFile] = []
    elsewhere: dict[str, str] = {}
    if cfg.storage.embedded.enabled:
        stores.append(StoreFile("telemetry", loaded.data_path(cfg.storage.embedded.path)))
    url = database_url(cfg.database.url, str(loaded.data_dir), None)
    state_file = sqlite_file(url)
    if state_file is not None:
        stores.append(StoreFile("state", state_file))
    else:
        shown = make_url(cfg.database.url).render_as_string(hide_password=True)
        elsewhere["state"] = f"in {shown}: back it up with pg_dump"
    # The stores' files of the release before the state database, while they are there:
    # a backup taken before the first start of this release still holds their data.
    for legacy in legacy_files(loaded):
        if legacy.path.is_file():
            stores.append(StoreFile("legacy-" + "-".join(legacy.stores), legacy.path))
    spool = loaded.data_path(cfg.storage.spool.path)
    for file in sorted(spool.glob("*.db")) if spool.is_dir() else []:
        stores.append(StoreFile(f"spool-{file.stem}", file))
    # Two settings may name one file (the old stores shared some).
    unique: dict[Path, StoreFile] = {}
    for store in stores:
        unique.setdefault(store.path.resolve(), store)
    return list(unique.values()), elsewhere


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def _copy(source: Path, target: Path) -> None:
    """Copy one database through SQLite's online backup API and check the copy."""
    with (
        contextlib.closing(sqlite3.connect(source)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)
        (verdict,) = dst.execute("PRAGMA integrity_check").fetchone()
        if verdict != "ok":
            raise BackupError(f"the copy of {source} fails its integrity check: {verdict}")


def backup(loaded: LoadedConfig, folder: Path) -> Manifest:
    """Copy every SQLite store of the config into ``folder`` (new or empty)."""
    if folder.exists() and any(folder.iterdir()):
        raise BackupError(f"{folder} is not empty: give a new folder for the backup")
    folder.mkdir(parents=True, exist_ok=True)
    stores, elsewhere = sqlite_stores(loaded)
    done = []
    for store in stores:
        if not store.path.exists():
            continue  # never opened yet: nothing to keep
        target = folder / f"{store.name}.db"
        try:
            _copy(store.path, target)
        except sqlite3.Error as exc:
            raise BackupError(f"cannot back up {store.path}: {exc}") from exc
        done.append(BackedUp(store.name, target.name, target.stat().st_size, _digest(target)))
    manifest = Manifest(
        FORMAT, loaded.config.site.city, time.time(), str(loaded.data_dir), done, elsewhere
    )
    (folder / MANIFEST).write_text(
        json.dumps(asdict(manifest), ensure_ascii=False, indent=2), encoding="utf-8"
    )
    return manifest


def read_manifest(folder: Path) -> Manifest:
    """The manifest of a backup folder, or a BackupError saying what is wrong with it."""
    path = folder / MANIFEST
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        manifest = Manifest(**{**raw, "stores": [BackedUp(**s) for s in raw["stores"]]})
    except FileNotFoundError:
        raise BackupError(f"{folder} is not a streetsense backup: no {MANIFEST}") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise BackupError(f"{path} is not a streetsense manifest: {exc}") from exc
    if manifest.format != FORMAT:
        raise BackupError(f"{path}: backup format {manifest.format}, this release reads {FORMAT}")
    return manifest


def restore(loaded: LoadedConfig, folder: Path) -> Manifest:
    """Put a backup's databases back in place of the config's; the controller must be stopped."""
    holder = holder_of(loaded.data_dir)
    if holder is not None:
        raise BackupError(
            f"a controller ({holder}) is running on {loaded.data_dir}: stop it before restoring"
        )
    manifest = read_manifest(folder)
    stores = {s.name: s for s in sqlite_stores(loaded)[0]}
    # Everything is checked before anything is written: a bad backup changes nothing.
    for item in manifest.stores:
        if item.name not in stores:
            raise BackupError(f"{folder}: {item.name} has no place in this config")
        file = folder / item.file
        if not file.exists() or _digest(file) != item.sha256:
            raise BackupError(f"{file} is missing or changed since the backup was made")
    for item in manifest.stores:
        target = stores[item.name].path
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            _copy(folder / item.file, target)
        except sqlite3.Error as exc:
            raise BackupError(f"cannot restore {target}: {exc}") from exc
    return manifest
