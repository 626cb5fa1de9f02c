# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Local files that survive a crash whole: atomic replacement and durable directory entries."""

from __future__ import annotations

import errno
import os
import tempfile

# Some filesystems (a few network ones) cannot fsync a directory; the file's own bytes were synced, which is the most
# they offer.
_DIRECTORY_SYNC_UNSUPPORTED = (errno.EINVAL, errno.ENOTSUP, errno.EBADF)


def sync_directory(directory: str) -> None:
    """Make a created, renamed or removed entry of ``directory`` durable, not only the file's bytes."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno not in _DIRECTORY_SYNC_UNSUPPORTED:
            raise
    finally:
        os.close(descriptor)


def replace_file(target: str, payload: bytes, mode: int) -> None:
    """Write ``payload`` to ``target`` (replacing it) so that a reader or a crash sees the old file or the new one.

    The temporary file lives in the target's directory, so the rename is atomic; it is fsynced before the rename and
    removed if anything fails.
    """
    directory = os.path.dirname(target)
    descriptor, temporary = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    sync_directory(directory)
