"""Write a folder or a figure atomically: fill a temporary sibling, then swap it in (stdlib only, no torch)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["replace_folder", "save_figure"]


def replace_folder(target: Path, fill: Callable[[Path], None]) -> Path:
    """Call ``fill`` on a new temporary folder beside ``target`` (same file system), then rename it to ``target``.

    An existing ``target`` is renamed aside first (``os.replace`` cannot overwrite a non-empty directory), the new
    folder moved in, then the old one deleted; if the move fails the old one is put back. On any failure the
    temporary folder is removed and ``target`` is left as it was.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    tmp = target.parent / f".{target.name}.tmp-{token}"
    tmp.mkdir()
    old: Path | None = None
    try:
        fill(tmp)
        if target.exists():
            old = target.parent / f".{target.name}.old-{token}"
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            if old is not None:
                os.replace(old, target)
                old = None
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def save_figure(fig: Any, path: Path) -> None:
    """Write a matplotlib figure as PNG atomically (a reader never sees half a file) and close it."""
    import matplotlib.pyplot as plt

    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
