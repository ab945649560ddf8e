"""Headless Chromium for tests that look at a page the way a person would (screenshots, the rendered DOM).

find_browser() returns a browser executable, installing Debian's `chromium` package when none is found and
we are root with apt-get (as .ci/run does); otherwise None with the reason, and the test skips saying why.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "headless_shell")
INSTALL_TIMEOUT_S = 900
RUN_TIMEOUT_S = 180  # a page with a few MB of inline PNGs renders in seconds; slow shared CI machines need more


def _which() -> str | None:
    env = os.environ.get("MVMAMMO_BROWSER")
    if env and shutil.which(env):
        return shutil.which(env)
    return next((shutil.which(n) for n in NAMES if shutil.which(n)), None)


def _install() -> str:
    """Try apt-get install chromium; '' on success, else why not."""
    if os.environ.get("MVMAMMO_NO_BROWSER_INSTALL"):
        return "MVMAMMO_NO_BROWSER_INSTALL is set"
    if not shutil.which("apt-get"):
        return "no apt-get to install Debian's chromium with"
    if os.geteuid() != 0:
        return "not root, so cannot apt-get install chromium (run: sudo apt-get install -y chromium)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        try:
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"`{' '.join(cmd)}` failed: {type(exc).__name__}"
        if res.returncode != 0:
            tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or [""]
            return f"`{' '.join(cmd)}` exited {res.returncode}: {tail[0]}"
    return ""


def find_browser() -> tuple[str | None, str]:
    """(executable, '') or (None, the reason there is none)."""
    found = _which()
    if found:
        return found, ""
    why = _install()
    found = _which()
    if found:
        return found, ""
    return None, f"no headless Chromium found ({', '.join(NAMES)}) and {why or 'the install put none on PATH'}"


def _run(browser: str, args: list[str]) -> subprocess.CompletedProcess:
    flags = ["--headless", "--disable-gpu", "--hide-scrollbars", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--mute-audio"]
    if os.geteuid() == 0:
        flags.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox on
    with tempfile.TemporaryDirectory(prefix="mvmammo-chromium-") as profile:
        return subprocess.run([browser, *flags, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=RUN_TIMEOUT_S)


def screenshot(browser: str, page: Path, out: Path, width: int = 1280, height: int = 2400) -> Path:
    res = _run(browser, [f"--screenshot={out}", f"--window-size={width},{height}", page.resolve().as_uri()])
    if not out.is_file():
        raise RuntimeError(f"{browser} wrote no screenshot (exit {res.returncode}): {res.stderr[-500:]}")
    return out


def dump_dom(browser: str, page: Path) -> str:
    """The DOM after the page loaded, serialised (what a person's browser would show)."""
    res = _run(browser, ["--dump-dom", page.resolve().as_uri()])
    if res.returncode != 0 or "<html" not in res.stdout:
        raise RuntimeError(f"{browser} --dump-dom failed (exit {res.returncode}): {res.stderr[-500:]}")
    return res.stdout
