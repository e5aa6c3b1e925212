"""Back up and restore the store while the service runs.

    python -m ops.scripts.backup backup  [--database-url URL] --to FILE
    python -m ops.scripts.backup restore [--database-url URL] --from FILE [--force]

The URL defaults to `ESSAYCOACH_DATABASE_URL` (else the embedded SQLite file under var/), as the
service reads it.

- **PostgreSQL**: `pg_dump --format=custom` takes one consistent snapshot (a repeatable-read
  transaction) without stopping writers; `pg_restore` loads it into an EMPTY database (create a
  fresh one and point the service at it; `--force` drops what the target holds first). Every update
  the service acknowledged before the dump began is in the dump: an ack is sent only after its
  group commit, and the snapshot sees every committed row.
- **SQLite** (the embedded default): SQLite's online backup API copies a consistent snapshot page
  by page while the service keeps writing (WAL mode: readers never block the writer). Restore
  copies the backup over the target with the same API; stop the service first (it holds the
  file), and `--force` is required when the target already holds data.

Restoring never runs migrations: start the service (`essaycoach run` / `essaycoach migrate`)
on the restored database and it upgrades the schema if the backup came from an older release.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from sqlalchemy.engine import make_url


class BackupError(RuntimeError):
    """A backup or restore that cannot proceed, with a one-line reason for the operator."""


def libpq_url(database_url: str) -> str:
    """The SQLAlchemy URL as pg_dump/pg_restore take it (no `+asyncpg` driver suffix)."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def sqlite_path(database_url: str) -> Path:
    database = make_url(database_url).database
    if not database or database == ":memory:":
        raise BackupError(f"not a SQLite file: {database_url}")
    return Path(database)


def is_sqlite(database_url: str) -> bool:
    return make_url(database_url).get_backend_name() == "sqlite"


def backup(database_url: str, target: Path) -> Path:
    """Write a consistent copy of the store at `database_url` to `target`; returns `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if is_sqlite(database_url):
        source = sqlite_path(database_url)
        if not source.exists():
            raise BackupError(f"no SQLite database at {source}")
        _sqlite_copy(source, target)
    else:
        _run(["pg_dump", "--format=custom", "--no-owner", "--no-privileges", f"--file={target}",
              libpq_url(database_url)])
    return target


def restore(database_url: str, source: Path, *, force: bool = False) -> None:
    """Load the backup `source` into the store at `database_url` (empty unless `force`)."""
    if not source.exists():
        raise BackupError(f"no backup at {source}")
    if is_sqlite(database_url):
        target = sqlite_path(database_url)
        if target.exists() and target.stat().st_size > 0 and not force:
            raise BackupError(f"{target} exists; stop the service and pass --force to overwrite it")
        target.parent.mkdir(parents=True, exist_ok=True)
        _sqlite_copy(source, target)
    else:
        extra = ["--clean", "--if-exists"] if force else []
        _run(["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", *extra,
              f"--dbname={libpq_url(database_url)}", str(source)])


def _sqlite_copy(source: Path, target: Path) -> None:
    # The backup API copies pages in steps and restarts if a writer changes a copied page, so the
    # result is one consistent state even while the service writes.
    with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src, sqlite3.connect(target) as dst:
        src.backup(dst, pages=1024)


def _run(command: list[str]) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise BackupError(f"{command[0]} not found: install the PostgreSQL client tools") from exc
    if done.returncode != 0:
        raise BackupError(f"{command[0]} failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")


def _default_url() -> str:
    url = os.environ.get("ESSAYCOACH_DATABASE_URL", "")
    if url:
        return url
    from serve_app.settings import Settings  # the embedded default, as the service derives it

    return Settings(jwt_secret="x" * 32).database_url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.scripts.backup", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("backup", help="write a consistent backup while the service runs")
    make.add_argument("--database-url", default=None)
    make.add_argument("--to", type=Path, required=True, help="backup file to write")
    load = sub.add_parser("restore", help="load a backup into an empty database")
    load.add_argument("--database-url", default=None)
    load.add_argument("--from", dest="source", type=Path, required=True, help="backup file to read")
    load.add_argument("--force", action="store_true", help="replace what the target holds")
    args = parser.parse_args(argv)
    url = args.database_url or _default_url()
    try:
        if args.command == "backup":
            print(backup(url, args.to))
        else:
            restore(url, args.source, force=args.force)
            print(f"restored {args.source} into {make_url(url).render_as_string(hide_password=True)}")
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
