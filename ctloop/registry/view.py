"""The registry, read only: aliases and versions for `ctloop status`, fast on the embedded store.

Importing MLflow and opening its SQLAlchemy store (with the schema check of the SQLite
database) costs seconds; a status line needs three small queries. On the embedded store
(`sqlite:///...`) `SqliteRegistryView` reads MLflow's registry tables directly, read only
(`registered_model_aliases`, `model_versions`, `model_version_tags`: MLflow's schema since
2.3), with MLflow's own rules: deleted versions are hidden and, in single-tenant mode, only the
`default` workspace counts. Anything else (a tracking server, PostgreSQL, MLflow workspaces, a
database whose tables lack these columns) goes through MLflow
(`ctloop.registry.store.Registry`). Nothing is created or written: a home without a database,
or with one MLflow never finished setting up (0 bytes, or cut short by a full disk: these
tables missing), has no versions, where opening it with MLflow would first create its tables
(a write, which a full disk refuses).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from ctloop.registry.store import ModelRef

if TYPE_CHECKING:
    from ctloop.config.settings import Config
    from ctloop.registry.store import Registry

DELETED = "Deleted_Internal"  # mlflow.entities.model_registry.model_version_stages
DEFAULT_WORKSPACE = "default"  # mlflow.utils.workspace_utils.DEFAULT_WORKSPACE_NAME
_COLUMNS = {
    "registered_model_aliases": {"alias", "version", "name"},
    "model_versions": {"name", "version", "current_stage", "run_id"},
    "model_version_tags": {"key", "value", "name", "version"},
}


class UnexpectedSchema(Exception):
    """The database is not an MLflow registry this view knows how to read."""


def sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///PATH` tracking URI; None for any other URI."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix) or "?" in tracking_uri:
        return None
    return Path(tracking_uri[len(prefix) :])


class SqliteRegistryView:
    """`by_alias`, `version` and `versions` of one registered model, read from MLflow's SQLite
    database without MLflow (same answers as `Registry`)."""

    def __init__(self, path: Path, name: str, tracking_uri: str):
        self.path = path
        self.name = name
        self.tracking_uri = tracking_uri
        self._workspaced: set[str] | None = None
        self._present: set[str] = set()  # the tables of _COLUMNS the database has

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(f"file:{quote(str(self.path))}?mode=ro", uri=True, timeout=30)
        try:
            yield db
        finally:
            db.close()

    def check(self) -> SqliteRegistryView:
        """Verify the tables and columns this view reads (a missing database is empty).

        Raises:
            UnexpectedSchema: a table or column is missing (e.g. a database not yet set up).
        """
        self._workspaced, self._present = set(), set()
        if not self.path.exists() or self.path.stat().st_size == 0:
            return self  # no database yet, or one SQLite created but never wrote a page to
        with self._connect() as db:
            workspaced, present = set(), set()
            for table, needed in _COLUMNS.items():
                columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                if not columns:
                    continue  # not made yet: MLflow makes all its tables before any version
                if not needed <= columns:
                    raise UnexpectedSchema(f"{self.path}: {table} lacks {needed - columns}")
                present.add(table)
                if "workspace" in columns:
                    workspaced.add(table)
        self._workspaced, self._present = workspaced, present
        return self

    def _where(self, table: str, alias: str = "") -> str:
        if self._workspaced is None:
            self.check()
        column = f"{alias}.workspace" if alias else "workspace"
        return f" AND {column} = '{DEFAULT_WORKSPACE}'" if table in self._workspaced else ""

    def _has(self, table: str) -> bool:
        if self._workspaced is None:
            self.check()
        return table in self._present

    def _refs(self, version: int | None = None) -> list[ModelRef]:
        if not self._has("model_versions"):
            return []
        query = (
            "SELECT version, run_id FROM model_versions WHERE name = ? AND current_stage != ?"
            + self._where("model_versions")
        )
        params: list = [self.name, DELETED]
        if version is not None:
            query += " AND version = ?"
            params.append(version)
        tags_query = "SELECT version, key, value FROM model_version_tags WHERE name = ?"
        tags_query += self._where("model_version_tags")
        with self._connect() as db:
            rows = db.execute(query, params).fetchall()
            tags: dict[int, dict[str, str]] = {}
            if rows and self._has("model_version_tags"):
                for v, key, value in db.execute(tags_query, [self.name]):
                    tags.setdefault(int(v), {})[key] = value
        refs = []
        for v, run_id in rows:
            t = tags.get(int(v), {})
            refs.append(ModelRef(self.name, int(v), t.get("semver", "0.0.0"), run_id, t))
        # like `Registry`: a half-made version (no semver written with it) is not shown
        return sorted((r for r in refs if r.complete), key=lambda r: r.version)

    def by_alias(self, alias: str) -> ModelRef | None:
        if not self._has("registered_model_aliases"):
            return None
        query = "SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?"
        query += self._where("registered_model_aliases")
        with self._connect() as db:
            row = db.execute(query, [self.name, alias]).fetchone()
        return self.version(int(row[0])) if row else None

    def version(self, version: int) -> ModelRef | None:
        found = self._refs(version)
        return found[0] if found else None

    def versions(self) -> list[ModelRef]:
        return self._refs()


def open_registry_view(config: Config) -> SqliteRegistryView | Registry:
    """A read-only view of a config's registry: direct SQLite reads on the embedded store,
    else the MLflow-backed `Registry`. Creates nothing."""
    from ctloop.stores.home import home_of

    home = home_of(config)
    uri = home.tracking_uri(config)
    path = sqlite_file(uri)
    workspaces = os.environ.get("MLFLOW_ENABLE_WORKSPACES", "").lower() in ("1", "true")
    if path is not None and not workspaces:
        try:
            return SqliteRegistryView(path, config.registry_name, uri).check()
        except (sqlite3.Error, UnexpectedSchema):
            pass  # let MLflow open (and set up) the database
    from ctloop.registry.store import open_registry

    return open_registry(config)
