"""Saved files get the mode an ordinary file gets under the process umask.

safetensors 0.8 writes every weight file through a temporary file created with mode 0600 and renames it into place
(upstream safetensors issue #782), so `model.safetensors` and `adapter_model.safetensors` end up readable by their
owner only, while the config, processor and card beside them are `0666 & ~umask` (0644 under the usual umask 022).
A model saved as root in a Docker image, or on a shared server, then cannot be loaded by anyone else. Every place mmft
writes weights calls `give_ordinary_modes` on what it wrote.
"""

from __future__ import annotations

import os
from pathlib import Path


def current_umask() -> int:
    """The process umask, read without changing it where Linux says it (`/proc/self/status`)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it (and put it straight back)
    os.umask(mask)
    return mask


def ordinary_file_mode() -> int:
    """The permission bits `open(path, "w")` gives a new file in this process: 0666 less the umask."""
    return 0o666 & ~current_umask()


def give_ordinary_modes(path: str | os.PathLike, pattern: str = "**/*") -> None:
    """Give each regular file of folder `path` that matches the glob `pattern` (default: every file, at any depth;
    `path` itself if it is a file) the ordinary file mode. Symbolic links and folders are left as they are."""
    path, mode = Path(path), ordinary_file_mode()
    files = [path] if path.is_file() else path.glob(pattern)
    for file in files:
        if file.is_file() and not file.is_symlink():
            os.chmod(file, mode)


__all__ = ["current_umask", "give_ordinary_modes", "ordinary_file_mode"]
