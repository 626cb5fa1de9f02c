# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Report files: written only when their content changes, atomically (temporary file + rename)."""

from __future__ import annotations

import os
from typing import Dict, Optional

from ansible_collections.keel.postgres.plugins.module_utils.durable_files import replace_file
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption

FILE_MODE = 0o644


def current_content(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as stream:
            return stream.read()
    except FileNotFoundError:
        return None


def write_report(path: str, content: str, field: str, check_mode: bool = False) -> Dict[str, object]:
    """``{path, changed, written}``: ``changed`` when the file is missing or differs; in check mode nothing is written.

    The temporary file lives in the target's directory, so the rename is atomic and a reader (node_exporter's
    textfile collector) never sees a half-written file.
    """
    target = os.path.abspath(path)
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise InvalidOption(field, "directory {0} does not exist".format(directory))
    if os.path.isdir(target):
        raise InvalidOption(field, "{0} is a directory; give the path of a file".format(target))
    payload = content.encode("utf-8")
    changed = current_content(target) != payload
    if not changed or check_mode:
        return {"path": target, "changed": changed, "written": False}
    replace_file(target, payload, FILE_MODE)
    return {"path": target, "changed": True, "written": True}
