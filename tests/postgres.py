"""A private PostgreSQL server for tests: initdb + pg_ctl in a temporary folder, on 127.0.0.1, a free port.

Nothing is mocked: the sweep's workers talk to a real server. The server runs as the current user, or, when
the tests run as root (CI, containers: initdb refuses root), as the ``postgres`` user or ``nobody`` through
``setpriv``; the cluster folder is then created outside pytest's private (0700) tmp tree and owned by them.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def find_bin() -> Path | None:
    """The folder holding initdb and pg_ctl: PATH first, then Debian's /usr/lib/postgresql/<version>/bin."""
    hit = shutil.which("initdb")
    if hit and shutil.which("pg_ctl"):
        return Path(hit).parent
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: float(Path(p).parent.name), reverse=True):
        if (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists():
            return Path(d)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """Context manager: ``with PostgresServer() as pg: pg.url`` (SQLAlchemy URL for psycopg2)."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.port = _free_port()
        self.user = None if os.geteuid() != 0 else next(u for u in ("postgres", "nobody") if _has_user(u))
        self.root = Path(tempfile.mkdtemp(prefix="mvmammo-pg-"))  # outside pytest's 0700 tree
        self.data = self.root / "data"
        self.url = f"postgresql+psycopg2://sweep@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.user:
            pw = pwd.getpwnam(self.user)
            cmd = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "LC_ALL": "C", "LANG": "C"})

    def __enter__(self) -> "PostgresServer":
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chmod(self.root, 0o755)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        r = self._run("initdb", "-D", str(self.data), "-U", "sweep", "-A", "trust", "-E", "UTF8", "--no-sync")
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stderr.strip()[-500:]}")
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c max_connections=50"
        r = self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.root / "server.log"), "-w",
                      "-t", "60", "start")
        if r.returncode != 0:
            log = (self.root / "server.log").read_text()[-500:] if (self.root / "server.log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {r.stderr.strip()[-300:]} {log}")
        return self

    def __exit__(self, *exc) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        time.sleep(0.2)
        shutil.rmtree(self.root, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
