"""A real headless browser for the tests that open a generated page: Chromium from Debian's
packages, installed here when it is missing and we are root (as CI is), else a skip reason."""

from __future__ import annotations

import os
import shutil
import subprocess

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium_or_reason() -> tuple[str | None, str]:
    """(path to a Chromium binary, "") or (None, why there is none and none can be installed)."""
    path = find_chromium()
    if path:
        return path, ""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None, "Chromium is not installed and installing it needs root (apt-get)"
    if shutil.which("apt-get") is None:
        return None, "Chromium is not installed and there is no apt-get to install it"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends",
                                         "chromium"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            return None, f"`{' '.join(cmd)}` failed: {tail[0]}"
    path = find_chromium()
    return (path, "") if path else (None, "apt-get installed chromium but no binary was found")
