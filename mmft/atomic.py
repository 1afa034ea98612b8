"""Write a file whole or not at all: into a temporary file beside it, then renamed into place.

`os.replace` within one folder is atomic, so a reader (or a resumed run) sees either the previous file or the new
one, never half of it, whatever kills the writer. The temporary file has a unique name (several processes may write
beside each other) and is given the ordinary file mode before the rename: `tempfile.mkstemp` creates it 0600 and
safetensors writes 0600 (mmft.file_modes), while the file it replaces was written as any other.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .file_modes import give_ordinary_modes


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in `path`'s folder to write to; when the block ends without an error the file written
    there gets the ordinary file mode and replaces `path`, otherwise it is removed and `path` is left as it was.
    The folder must exist; the file must be closed when the block ends."""
    path = Path(path)
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    temporary = Path(name)
    try:
        yield temporary
        give_ordinary_modes(temporary)
        os.replace(temporary, path)
    except BaseException:  # a KeyboardInterrupt too: no temporary file is left behind
        temporary.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` whole or not at all (see `atomic_path`)."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding=encoding)


__all__ = ["atomic_path", "atomic_write_text"]
