"""Where aotc's files live: package data (templates and the default tile-spec catalog, found both in a
source checkout's top-level templates/, tile_specs/ and in an installed wheel's aotc/templates, ...)
and the default cache. Stdlib only: the FlashInfer hook's install() finds the cache through this
module without importing the cache package."""

from __future__ import annotations

import functools
import os
from pathlib import Path

CACHE_DIR_ENV = "AOTC_CACHE_DIR"


@functools.cache
def package_dir() -> Path:
    """The installed package's folder (resolved on first use: importing this module touches no file)."""
    return Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    installed = package_dir() / name
    if installed.is_dir():
        return installed
    return package_dir().parent / name


def templates_dir() -> Path:
    return data_dir("templates")


def catalog_dir() -> Path:
    return data_dir("tile_specs")


def checkout_root() -> Path | None:
    """The source checkout aotc runs from, if any (it holds pyproject.toml and tile_specs/)."""
    root = package_dir().parent
    if (root / "pyproject.toml").is_file() and (root / "tile_specs").is_dir():
        return root
    return None


def default_cache_dir() -> Path:
    """$AOTC_CACHE_DIR; else cache/ of a source checkout; else $XDG_CACHE_HOME/aotc (~/.cache/aotc)."""
    env = os.environ.get(CACHE_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    checkout = checkout_root()
    if checkout is not None:
        return checkout / "cache"
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "aotc"
