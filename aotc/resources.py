"""Where package data lives: templates and the default tile-spec catalog, found both in a source
checkout (top-level templates/, tile_specs/) and in an installed wheel (aotc/templates, ...)."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    installed = _PACKAGE / name
    if installed.is_dir():
        return installed
    return _PACKAGE.parent / name


def templates_dir() -> Path:
    return data_dir("templates")


def catalog_dir() -> Path:
    return data_dir("tile_specs")


def checkout_root() -> Path | None:
    """The source checkout aotc runs from, if any (it holds pyproject.toml and tile_specs/)."""
    root = _PACKAGE.parent
    if (root / "pyproject.toml").is_file() and (root / "tile_specs").is_dir():
        return root
    return None
