"""FlashInfer presets: TOML data naming FlashInfer generator calls (`module:function` + arguments,
with sweeps) that `aotc build --flashinfer PRESET` compiles ahead of time. Loading is pure data;
`ModuleCall.spec()` imports FlashInfer and runs the generator (worker process or error path only).
"""

from __future__ import annotations

import importlib
import itertools
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aotc.diagnostics import AotcError, Diagnostic
from aotc.resources import data_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PRESET_SUFFIX = ".toml"
# What `aotc build --flashinfer` builds when no preset is named: FlashInfer's SM120 modules plus
# the common attention modules.
DEFAULT_PRESETS = ("sm120", "attention")
_GENERATOR = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
_REF = re.compile(r"\$([A-Za-z_]\w*)")
# Arguments whose FlashInfer generators want torch dtypes; presets spell them as strings.
_DTYPE_ARG = re.compile(r"dtype_\w+|\w+_dtype")


@dataclass(frozen=True)
class ModuleCall:
    """One generator call of a preset: FlashInfer returns one JitSpec (one module) for it."""

    preset: str
    generator: str  # "flashinfer.jit.gemm:gen_gemm_sm120_module_cutlass_fp4"
    args: tuple[tuple[str, Any], ...]
    archs: tuple[str, ...]  # aotc arch names this call applies to ("" = every requested arch)
    module: str = ""  # the module name the call yields, when the preset states it (checked at build)

    def describe(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.args)
        return f"{self.generator}({shown})"

    def spec(self) -> Any:
        """Run the generator; FlashInfer must already be configured for the target arch."""
        module_name, func_name = self.generator.split(":")
        func = getattr(importlib.import_module(module_name), func_name)
        return func(**{k: _to_flashinfer(k, v) for k, v in self.args})


@dataclass(frozen=True)
class Preset:
    name: str
    file: str
    description: str
    archs: tuple[str, ...]  # the archs the preset is meant for (default of `aotc build`)
    calls: tuple[ModuleCall, ...]


def _to_flashinfer(name: str, value: Any) -> Any:
    if isinstance(value, str) and _DTYPE_ARG.fullmatch(name):
        import torch

        dtype = getattr(torch, value, None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"argument {name} = {value!r} is not a torch dtype name (e.g. 'bfloat16')")
        return dtype
    return value


def presets_dir() -> Path:
    """flashinfer_presets/ of the checkout, or the copy installed in the package."""
    return data_dir("flashinfer_presets")


def available_presets() -> list[str]:
    d = presets_dir()
    return sorted(p.stem for p in d.glob(f"*{PRESET_SUFFIX}")) if d.is_dir() else []


def _preset_error(file: str, message: str, fix: str) -> AotcError:
    return AotcError(Diagnostic(code="AOTC-FI-001", message=message, file=file, fix=fix))


def preset_path(name: str) -> Path:
    """A preset by name (flashinfer_presets/NAME.toml) or by path to a .toml file."""
    as_path = Path(name)
    if as_path.suffix == PRESET_SUFFIX and as_path.is_file():
        return as_path
    path = presets_dir() / f"{name}{PRESET_SUFFIX}"
    if not path.is_file():
        known = ", ".join(available_presets()) or "none"
        raise _preset_error(str(path), f"no FlashInfer preset named {name!r} (known presets: {known})",
                            "pick one of the known presets, or pass the path of a preset .toml file")
    return path


def _expand_sweep(args: dict[str, Any], sweep: dict[str, list], file: str, where: str) -> list[dict[str, Any]]:
    for key, values in sweep.items():
        if not isinstance(values, list) or not values:
            raise _preset_error(file, f"{where}: sweep.{key} must be a non-empty list, got {values!r}",
                                f"write sweep.{key} = [value, ...]")
    keys = list(sweep)
    expanded = []
    for combo in itertools.product(*(sweep[k] for k in keys)):
        call = {**args, **dict(zip(keys, combo))}
        expanded.append({k: _resolve_ref(call, k, v, file, where) for k, v in call.items()})
    return expanded


def _resolve_ref(call: dict[str, Any], key: str, value: Any, file: str, where: str) -> Any:
    """`"$head_dim_qk"` means: the value of argument head_dim_qk in the same call."""
    if isinstance(value, str) and (m := _REF.fullmatch(value)):
        if m.group(1) not in call:
            raise _preset_error(file, f"{where}: {key} = {value!r} refers to an argument the call does not have",
                                f"use one of: {', '.join(call)}")
        return call[m.group(1)]
    return value


def _calls_of(entry: dict[str, Any], preset: str, file: str, index: int) -> list[ModuleCall]:
    where = f"module #{index + 1}"
    unknown = set(entry) - {"generator", "args", "sweep", "archs", "module"}
    if unknown:
        raise _preset_error(file, f"{where}: unknown keys {sorted(unknown)}",
                            "a [[module]] table takes generator, args, sweep, archs and module only")
    generator = entry.get("generator")
    if not isinstance(generator, str) or not _GENERATOR.fullmatch(generator):
        raise _preset_error(file, f"{where}: generator = {generator!r} is not of the form 'package.module:function'",
                            "e.g. generator = \"flashinfer.jit.gemm:gen_gemm_sm120_module_cutlass_fp4\"")
    archs = tuple(entry.get("archs", ()))
    calls = _expand_sweep(dict(entry.get("args", {})), dict(entry.get("sweep", {})), file, where)
    module = str(entry.get("module", ""))
    if module and len(calls) > 1:
        raise _preset_error(file, f"{where}: module = {module!r} names one module, but the sweep makes {len(calls)}",
                            "drop `module` from swept entries")
    return [ModuleCall(preset, generator, tuple(sorted(c.items())), archs, module) for c in calls]


def load_preset(name: str) -> Preset:
    path = preset_path(name)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise _preset_error(str(path), f"not valid TOML: {e}", "fix the syntax") from None
    modules = data.get("module", [])
    if not isinstance(modules, list) or not modules:
        raise _preset_error(str(path), "the preset lists no [[module]] tables",
                            "add at least one [[module]] with a generator")
    calls = [c for i, entry in enumerate(modules) for c in _calls_of(entry, path.stem, str(path), i)]
    return Preset(path.stem, str(path), str(data.get("description", "")), tuple(data.get("archs", ())),
                  tuple(calls))


def presets_containing(module: str) -> list[str]:
    """Names of the presets with a generator call that yields FlashInfer module `module`. Runs the
    generators (FlashInfer writes their generated sources, as its JIT would): error paths only."""
    found = []
    for name in available_presets():
        try:
            calls = load_preset(name).calls
        except AotcError:
            continue
        for call in calls:
            try:
                # A stated name spares running a generator with side effects (fmha_v2 compiles a tool).
                if (call.module or call.spec().name) == module:
                    found.append(name)
                    break
            except Exception:  # noqa: BLE001, S112 - a generator that cannot run here cannot be the answer
                continue
    return found
