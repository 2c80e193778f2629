"""Cache directory layout and build-once-atomically helper."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

ENV_CACHE_DIR = "COSTWISE_MODEL_CACHE"

# Written last, inside the temp dir, before the rename: a directory without it was not produced by
# `build_once` (e.g. copied in by hand, or left by an older layout) and is rebuilt.
COMPLETE_MARKER = ".costwise-complete"


def default_cache_dir() -> Path:
    """Return the directory where built models are cached.

    ``$COSTWISE_MODEL_CACHE`` if set and non-empty, else ``~/.cache/costwise/models``.
    """
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "costwise" / "models"


def content_key(spec: Mapping[str, Any]) -> str:
    """Short stable hash of everything that determines a build's output."""
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def is_complete(path: Path) -> bool:
    return (path / COMPLETE_MARKER).is_file()


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    # Serialises builders of the same entry across processes so a second caller waits for the
    # first one instead of repeating a 30 s conversion. Correctness does not depend on it:
    # the rename below is what makes a directory visible.
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_once(cache_dir: Path, name: str, build: Callable[[Path], None]) -> Path:
    """Return ``cache_dir/name``, calling ``build(tmp_dir)`` first if it is not there yet.

    ``build`` fills an empty temp directory next to the target; the directory is then renamed
    into place, so readers only ever see a complete build (or none).
    """
    final = cache_dir / name
    if is_complete(final):
        return final

    cache_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(cache_dir / f".{name}.lock"):
        if is_complete(final):  # another process finished while we waited for the lock
            return final
        tmp_prefix = f".{name}.tmp-"
        # Holding the lock means no live builder owns these: they are leftovers of killed builds.
        for stale in cache_dir.glob(tmp_prefix + "*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():
            # Incomplete (no marker). Move it aside first: rmtree is not atomic, a rename is.
            trash = Path(tempfile.mkdtemp(prefix=tmp_prefix, dir=cache_dir))
            final.rename(trash / "old")
            shutil.rmtree(trash, ignore_errors=True)

        tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix, dir=cache_dir))
        try:
            build(tmp)
            (tmp / COMPLETE_MARKER).write_text(name + "\n")
            # mkdtemp makes the dir 0700 and some writers (safetensors) make files 0600; the cache may
            # be shared with another uid (e.g. a container), so open it up to read-only for others.
            tmp.chmod(0o755)
            for f in tmp.rglob("*"):
                f.chmod(0o755 if f.is_dir() else 0o644)
            tmp.rename(final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final
