"""Make the working tree importable and runnable as ``keel.postgres``.

Ansible finds collections only under ``ansible_collections/<ns>/<name>``;
a symlink under the git-ignored ``.build/`` gives the repository that shape
without copying it, so tests always exercise the files being edited.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS_ROOT = REPO_ROOT / ".build" / "collections"
COLLECTION_LINK = COLLECTIONS_ROOT / "ansible_collections" / "keel" / "postgres"


def ensure_collection_link() -> Path:
    """Create the symlink if missing; safe when several processes race to do it."""
    COLLECTION_LINK.parent.mkdir(parents=True, exist_ok=True)
    if not COLLECTION_LINK.is_symlink():
        temporary = COLLECTION_LINK.with_name("postgres.{0}.tmp".format(os.getpid()))
        if temporary.is_symlink():
            temporary.unlink()
        temporary.symlink_to(REPO_ROOT, target_is_directory=True)
        os.replace(temporary, COLLECTION_LINK)
    return COLLECTIONS_ROOT


def ensure_collection_importable() -> None:
    root = str(ensure_collection_link())
    if root not in sys.path:
        sys.path.insert(0, root)
