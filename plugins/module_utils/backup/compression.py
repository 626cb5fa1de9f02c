# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""zstandard streaming (de)compression of backup streams.

Frames carry zstd's own content checksum too: a decompression fault after a
correct decryption (a buggy writer) is then reported, not restored.
"""

from __future__ import annotations

import traceback
from typing import Any, Optional

try:
    import zstandard
except ImportError:
    zstandard = None
    ZSTANDARD_IMPORT_ERROR: Optional[str] = traceback.format_exc()
    CompressionError: Any = RuntimeError  # never raised: modules fail earlier with missing_required_lib
else:
    ZSTANDARD_IMPORT_ERROR = None
    CompressionError = zstandard.ZstdError


def new_compressor(level: int, threads: int) -> Any:
    """A streaming compressor: ``compress(bytes) -> bytes`` as output becomes available, then ``flush()``."""
    return zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True).compressobj()


def new_decompressor() -> Any:
    """A streaming decompressor: ``decompress(bytes) -> bytes``; raises ``CompressionError`` on a bad frame."""
    return zstandard.ZstdDecompressor().decompressobj()
