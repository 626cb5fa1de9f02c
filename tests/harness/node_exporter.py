"""A real prometheus-node-exporter (Debian package) on loopback, serving only its textfile collector."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.harness.ports import free_port
from tests.harness.processes import die_with_parent, log_tail, stop_child

BINARY_NAMES = ("prometheus-node-exporter", "node_exporter")


def binary() -> str | None:
    for name in BINARY_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


class NodeExporter:
    """Started with ``--collector.disable-defaults --collector.textfile``: the scrape holds the textfiles and its own
    metrics, nothing from the machine."""

    def __init__(self, textfile_directory: Path, log_path: Path) -> None:
        self.textfile_directory = textfile_directory
        self.log_path = log_path
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def start(self, timeout: float = 15.0) -> "NodeExporter":
        path = binary()
        if path is None:
            raise RuntimeError("prometheus-node-exporter is not installed (Debian package prometheus-node-exporter; .ci/run installs it)")
        argv = [path, f"--web.listen-address=127.0.0.1:{self.port}", "--collector.disable-defaults", "--collector.textfile",
                f"--collector.textfile.directory={self.textfile_directory}"]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent(signal.SIGTERM))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("node exporter exited: " + log_tail(self.log_path))
            try:
                self.scrape()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("node exporter did not answer within {0}s: {1}".format(timeout, log_tail(self.log_path)))

    def scrape(self) -> str:
        with urllib.request.urlopen(self.url, timeout=5) as response:
            return response.read().decode("utf-8")

    def stop(self) -> None:
        if self.process is not None:
            stop_child(self.process, signal.SIGTERM, 10.0)
            self.process = None
