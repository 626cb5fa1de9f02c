"""Headless Chromium (Debian's package) for screenshots of pages the collection writes."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.harness.processes import log_tail

# Chromium reaches out to Google's services at start; this machine's network refuses those connections, so the
# background services are switched off. --no-sandbox because the tests run as root in CI.
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


class ChromiumMissing(RuntimeError):
    pass


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise ChromiumMissing("headless Chromium is needed to render the HTML report: install Debian's chromium package (.ci/run does)")


def screenshot(page: Path, output: Path, width: int = 1200, height: int = 900, timeout: float = 120.0) -> Path:
    """Render the local file `page` and save a PNG of the first `width` x `height` pixels to `output`."""
    with tempfile.TemporaryDirectory(prefix="keel-chromium-") as profile:
        log = Path(profile) / "chromium.log"
        with log.open("wb") as stream:
            completed = subprocess.run(
                [find_chromium(), *_FLAGS, "--user-data-dir=" + profile, "--window-size={0},{1}".format(width, height),
                 "--screenshot=" + str(output), page.resolve().as_uri()],
                stdout=stream, stderr=subprocess.STDOUT, timeout=timeout, check=False)
        if completed.returncode != 0 or not output.is_file():
            raise RuntimeError("chromium exited with {0} and no screenshot:\n{1}".format(completed.returncode, log_tail(log)))
    return output
