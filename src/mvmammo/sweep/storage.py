"""Where a sweep's study lives: Optuna's journal file (default) or an SQL database URL.

The journal file is an append-only log guarded by a lock file created with O_CREAT|O_EXCL
(``JournalFileOpenLock``), which works on NFS and other shared file systems, so workers on many nodes can
share one file with no server. ``postgresql+psycopg2://user@host:port/db`` (or any SQLAlchemy URL) uses
Optuna's RDB storage, for many concurrent workers.

Neither storage is asked for Optuna's own heartbeat: optuna 5's JournalStorage does not implement it (only
RDBStorage does), so the sweep keeps its own heartbeat as a trial system attribute for both (study.py).
"""
from __future__ import annotations

from pathlib import Path

from mvmammo.errors import UsageError

JOURNAL_NAME = "journal.log"


def default_url(sweep_dir: str | Path) -> str:
    return f"journal:{Path(sweep_dir).resolve() / JOURNAL_NAME}"


def open_storage(url: str):
    """An optuna storage for ``journal:PATH`` or an SQLAlchemy URL; the error names the URL and the fix."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

    if url.startswith("journal:"):
        path = Path(url[len("journal:"):])
        if not path.parent.is_dir():
            raise UsageError(f"--storage {url}: folder {path.parent} does not exist; create it or use another path")
        # grace_period: a lock left by a worker killed while writing is broken after 30 s.
        backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path), grace_period=30))
        return JournalStorage(backend)
    if "://" not in url:
        raise UsageError(f"--storage {url!r}: expected journal:PATH or a database URL such as "
                         "postgresql+psycopg2://user@host:5432/db")
    try:
        # pool_pre_ping: workers idle for hours between trials find dropped connections before using them.
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    except Exception as exc:  # sqlalchemy/psycopg2 raise many types; all mean "cannot use this URL"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"--storage {_hide_password(url)}: cannot open the database ({first}); check the server, "
                         "user and database name") from None


def _hide_password(url: str) -> str:
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        cred, host = rest.split("@", 1)
        if ":" in cred:
            return f"{scheme}://{cred.split(':', 1)[0]}:***@{host}"
    return url
