"""Output directories that never lose what is already written.

- ``claim_output`` refuses a directory that already holds outputs unless the user asked to
  overwrite (or resume) it, before any work starts;
- ``publish`` writes a result directory beside its destination and renames it into place,
  so a crash or a full disk mid-copy leaves the previous result whole;
- ``new_run_name`` is unique even for two jobs started in the same second (Ray resumes a
  run whose storage path and name it has seen before).
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path


class OutputExistsError(FileExistsError):
    """The output directory holds another run's results and overwriting was not asked for."""


def new_run_name(prefix: str) -> str:
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def claim_output(output: str | Path, overwrite: bool = False) -> Path:
    """The resolved output directory, created; an existing non-empty one only if ``overwrite``."""
    output = Path(output).resolve()
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        held = ", ".join(sorted(p.name for p in output.iterdir())[:6])
        raise OutputExistsError(
            f"{output} already holds a run's outputs ({held}); pass --overwrite to replace them, or choose another --output"
        )
    output.mkdir(parents=True, exist_ok=True)
    return output


def publish(write: Callable[[Path], object], dest: str | Path) -> Path:
    """Call ``write(tmp)`` to fill a fresh sibling directory, then move it to ``dest``.

    An existing ``dest`` is replaced only once the new one is complete.
    """
    dest = Path(dest)
    token = secrets.token_hex(4)
    tmp, old = dest.with_name(f".{dest.name}.partial-{token}"), dest.with_name(f".{dest.name}.old-{token}")
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest
