"""Where a FlashInfer module build keeps its workspace (FlashInfer's generated sources and ninja's
objects, gigabytes for fused MoE): one folder per arch in the cache's tmp/, locked while a build
uses it, kept after a failure so the next build resumes, swept by `aotc gc` after a week untouched.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from aotc.cache import Cache
from aotc.diagnostics import AotcError, Diagnostic

MAX_AGE_S = 7 * 86_400.0


def workspace_dir(cache: Cache, arch: str) -> Path:
    return (cache.tmp_dir / f"flashinfer-{arch}").resolve()


def lock_workspace(ws: Path, arch: str) -> Any:
    """The held lock of a workspace (release it when done); a coded error if another build has it."""
    from filelock import FileLock, Timeout

    lock = FileLock(f"{ws}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise AotcError(Diagnostic(
            code="AOTC-FI-009", message=f"another `aotc build --flashinfer` for {arch} is using {ws}",
            fix="wait for it to finish: it stores what it builds in the same cache, and a build started "
            "afterwards gets those modules as cache hits")) from None
    return lock


def sweeper(cache: Cache, max_age: float = MAX_AGE_S):
    """The sweep `aotc gc` runs (aotc.cache.maintenance.gc's `sweeps`): build workspaces in tmp/
    that no build touched for max_age and none holds now."""

    def sweep(now: float, dry_run: bool) -> list[str]:
        from filelock import FileLock, Timeout

        swept: list[str] = []
        if not cache.tmp_dir.is_dir():
            return swept
        for entry in os.scandir(cache.tmp_dir):
            if not entry.is_dir(follow_symlinks=False) or entry.path == str(cache.lock_dir):
                continue
            folder = Path(entry.path)
            try:
                touched = max(p.stat().st_mtime for p in (folder, *folder.glob("*"), *folder.glob("*/.ninja_log")))
            except FileNotFoundError:
                continue
            if now - touched <= max_age:
                continue
            lock = FileLock(f"{folder}.lock")
            try:
                lock.acquire(timeout=0)
            except Timeout:  # a build is using it right now
                continue
            try:
                swept.append(str(folder))
                if not dry_run:
                    shutil.rmtree(folder, ignore_errors=True)
            finally:
                lock.release()
        return swept

    return sweep
