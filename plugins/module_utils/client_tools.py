# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Finding pg_dump / pg_restore on the host that runs the module.

pg_dump refuses to dump a server of a newer major version, so the version of
the client tools matters as much as their presence. When no directory is
given, the newest copy among PATH and the usual per-version directories
(Debian ``/usr/lib/postgresql/N/bin``, RHEL ``/usr/pgsql-N/bin``) is chosen:
a newer pg_dump reads older servers, never the other way round.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from typing import Dict, List, Optional

from ansible_collections.keel.postgres.plugins.module_utils.errors import ClientToolProblem

_VERSION = re.compile(r"\(PostgreSQL\)\s+(?P<major>\d+)(?:\.(?P<minor>\d+))?(?:\.(?P<patch>\d+))?")
_VERSIONED_DIRS = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin")


def parse_tool_version(output: str) -> Optional[int]:
    """Turn ``pg_dump (PostgreSQL) 15.18 (Debian ...)`` into 150018 (server_version_num style)."""
    match = _VERSION.search(output)
    if match is None:
        return None
    major = int(match.group("major"))
    minor = int(match.group("minor") or 0)
    if major >= 10:
        return major * 10000 + minor
    return major * 10000 + minor * 100 + int(match.group("patch") or 0)


def major_version(version_num: int) -> str:
    """``150018`` -> ``"15"``; ``90624`` -> ``"9.6"`` (majors had two parts before 10)."""
    if version_num >= 100000:
        return str(version_num // 10000)
    return "{0}.{1}".format(version_num // 10000, (version_num // 100) % 100)


def display_version(version_num: int) -> str:
    if version_num >= 100000:
        return "{0}.{1}".format(version_num // 10000, version_num % 10000)
    return "{0}.{1}.{2}".format(version_num // 10000, (version_num // 100) % 100, version_num % 100)


def candidate_paths(tool: str, bin_dir: Optional[str]) -> List[str]:
    if bin_dir:
        return [os.path.join(bin_dir, tool)]
    found = [shutil.which(tool)] + [os.path.join(d, tool) for d in _sorted_versioned_dirs()]
    return [path for path in found if path and os.access(path, os.X_OK)]


def tool_version(path: str) -> Optional[int]:
    try:
        completed = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return None
    return parse_tool_version(completed.stdout)


def inspect_client_tool(tool: str, bin_dir: Optional[str], server_version_num: int) -> Dict[str, object]:
    """Report the newest usable copy of ``tool`` and whether it can serve this server."""
    best_path, best_version = None, None
    for path in candidate_paths(tool, bin_dir):
        version = tool_version(path)
        if version is not None and (best_version is None or version > best_version):
            best_path, best_version = path, version
    report: Dict[str, object] = {
        "name": tool,
        "path": best_path,
        "version": display_version(best_version) if best_version else None,
        "version_num": best_version,
        "server_version": display_version(server_version_num),
        "compatible": False,
        "problem": None,
    }
    if best_version is None:
        where = "in {0}".format(bin_dir) if bin_dir else "on PATH or in /usr/lib/postgresql/*/bin"
        report["problem"] = "{0} was not found {1} on the host running the module".format(tool, where)
    elif _major_key(best_version) < _major_key(server_version_num):
        report["problem"] = (
            "{0} {1} at {2} is older than the server ({3}); it cannot dump or restore a newer major version. "
            "Install the PostgreSQL {4} client tools or set client_bin_dir".format(
                tool, report["version"], best_path, report["server_version"], major_version(server_version_num)
            )
        )
    else:
        report["compatible"] = True
    return report


def require_compatible(report: Dict[str, object]) -> None:
    if not report["compatible"]:
        raise ClientToolProblem(str(report["problem"]))


def _major_key(version_num: int) -> int:
    return version_num // 10000 if version_num >= 100000 else version_num // 100


def _sorted_versioned_dirs() -> List[str]:
    dirs = [d for pattern in _VERSIONED_DIRS for d in glob.glob(pattern)]
    return sorted(dirs, key=_dir_version, reverse=True)


def _dir_version(path: str) -> float:
    match = re.search(r"(\d+(?:\.\d+)?)", path)
    return float(match.group(1)) if match else 0.0
