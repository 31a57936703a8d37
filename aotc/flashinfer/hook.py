"""Runtime hook: FlashInfer consults the aotc cache before it JIT-compiles a module and before its
cubin loader reads or downloads an artifact. Modules found are handed to FlashInfer as an AOT
provider (FlashInfer's own arch selection and loading then apply); everything else is left to
FlashInfer unless on_miss="error". Runtime side: imports no Jinja2, runs no compiler.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from aotc.arch import ARCHES
from aotc.cache import Cache
from aotc.diagnostics import AotcError, Diagnostic
from aotc.flashinfer.index import SO_BLOB, module_key
from aotc.runtime.sources import CacheSource, WheelSource

ENV_ENABLE = "AOTC_FLASHINFER"  # 1: launch.py / activate_from_env() install the hook
ENV_ON_MISS = "AOTC_FLASHINFER_ON_MISS"  # "jit" (default) or "error"
ON_MISS = ("jit", "error")
PROVIDER_PREFIX = "aotc-"
_DIGEST_CHARS = frozenset("0123456789abcdef")
log = logging.getLogger("aotc.flashinfer")


class HookState:
    """What install() set up and what the hook served. A plain slotted class: a dataclass costs
    about a millisecond to create at import, on the path of every served process."""

    __slots__ = ("artifacts_served", "cache", "local", "lock", "looked_up", "on_miss", "patched", "problems",
                 "root", "served_from", "version", "wheels")

    def __init__(self, cache: Cache, on_miss: str, version: str):
        self.cache = cache
        self.on_miss = on_miss
        self.version = version
        self.local = CacheSource(cache)
        self.wheels = WheelSource()  # searched after the cache, as the runtime does
        self.served_from: dict[str, str] = {}  # module -> the source that served it
        self.patched: list[tuple[Any, str, Any, Any]] = []  # (owner, attr, old, new)
        self.looked_up: dict[str, list[str]] = {}  # module -> aotc archs served
        self.problems: dict[str, str] = {}  # module -> why aotc could not serve it
        self.artifacts_served = 0
        self.lock = threading.Lock()
        self.root: Path | None = None  # the provider folder (_provider_root)

    def report(self) -> dict[str, Any]:
        return {"cache": str(self.cache.root), "on_miss": self.on_miss, "flashinfer_version": self.version,
                "served": {m: a for m, a in self.looked_up.items() if a}, "served_from": dict(self.served_from),
                "problems": dict(self.problems), "artifacts_served": self.artifacts_served}

    def sources(self) -> list[Any]:
        """Where modules come from, in order: the local cache, then installed kernel wheels."""
        return [self.local, self.wheels]


_state: HookState | None = None


def installed() -> bool:
    return _state is not None


def status() -> dict[str, Any] | None:
    """What the hook served so far (module -> aotc archs), or None when not installed."""
    return _state.report() if _state is not None else None


# --- serving modules ------------------------------------------------------------------------------

def _provider_root(st: HookState) -> Path:
    """<runtime folder>/flashinfer/<tag of the cache and FlashInfer version>, found once per install."""
    if st.root is None:
        from aotc.runtime.files import helper_dir

        tag = hashlib.sha256(f"{st.cache.root.resolve()}\0{st.version}".encode()).hexdigest()[:16]
        st.root = helper_dir() / "flashinfer" / tag
    return st.root


def _link(target: Path, link: Path) -> None:
    """Atomically point `link` at `target` (FlashInfer wants <dir>/<module>/<module>.so)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() and os.readlink(link) == str(target):
        return
    tmp = link.with_name(f".{link.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def _preload_needed(manifest: dict[str, Any]) -> None:
    """Make the module's libcudart resolvable: where the CUDA runtime is not on the loader path
    (pip-installed CUDA), load it by its soname from the pip wheels first."""
    for soname in manifest.get("needed", []):
        if not soname.startswith("libcudart.so"):
            continue
        try:
            ctypes.CDLL(soname, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            try:
                from cuda.pathfinder import load_nvidia_dynamic_lib

                load_nvidia_dynamic_lib("cudart")
            except Exception as exc:  # noqa: BLE001 - FlashInfer's own load error will say the rest
                log.warning("aotc: could not preload %s for FlashInfer modules: %s", soname, exc)


def _materialize(st: HookState, source: Any, module: str, arch: str, manifest: dict[str, Any]) -> Path:
    from aotc.runtime.files import helper_path

    digest = manifest["blobs"][SO_BLOB]["sha256"]
    so = helper_path(digest, lambda: source.read_blob(digest))  # digest-checked on every reuse
    link = _provider_root(st) / arch / module / f"{module}.so"
    _link(so, link)
    _preload_needed(manifest)
    return link


def _candidate_archs(jit_env: Any) -> list[str]:
    """aotc archs whose binaries FlashInfer would accept for at least one of its target archs."""
    from flashinfer.jit._cuda_architecture import cuda_binary_target_compatibility_score as score

    targets = jit_env._target_cuda_architectures()
    return [a for a in ARCHES if any(score(a, t) is not None for t in targets)]


def _register(jit_env: Any, st: HookState, module: str, arch: str) -> None:
    """Add `module` to the aotc provider of `arch` (one provider per arch, as FlashInfer's wheels)."""
    pid = PROVIDER_PREFIX + arch
    providers = list(jit_env.FLASHINFER_AOT_PROVIDERS)
    old = next((p for p in providers if p.provider_id == pid), None)
    new = jit_env.AOTProvider(
        provider_id=pid, distribution="aotc", version=st.version,
        jit_cache_dir=_provider_root(st) / arch, cuda_architectures=frozenset({arch}),
        modules=(old.modules if old else frozenset()) | {module},
    )
    jit_env.FLASHINFER_AOT_PROVIDERS = tuple(p for p in providers if p.provider_id != pid) + (new,)
    if new.jit_cache_dir not in jit_env.FLASHINFER_AOT_DIRS:
        jit_env.FLASHINFER_AOT_DIRS = (*jit_env.FLASHINFER_AOT_DIRS, new.jit_cache_dir)


def _serve_module(jit_env: Any, st: HookState, module: str) -> None:
    served = []
    for arch in _candidate_archs(jit_env):
        for source in st.sources():
            try:
                manifest = source.resolve(module_key(module, st.version, arch))
                if manifest is None:
                    continue
                _materialize(st, source, module, arch, manifest)
            except (AotcError, OSError, KeyError, ValueError) as exc:
                # FlashInfer's try_load contract: an artifact problem is a miss, never a crash.
                st.problems[module] = f"{arch}: {exc}"
                log.warning("aotc: not serving FlashInfer module %s for %s from %s: %s", module, arch,
                            source.name, exc)
                continue
            _register(jit_env, st, module, arch)
            served.append(arch)
            st.served_from[module] = source.origin(manifest["blobs"][SO_BLOB]["sha256"])
            break
    st.looked_up[module] = served


def _wrap_get_aot_artifacts(jit_env: Any, st: HookState, original: Any) -> Any:
    def get_aot_artifacts(module_name: str) -> Any:
        if module_name not in st.looked_up:
            with st.lock:
                if module_name not in st.looked_up:
                    _serve_module(jit_env, st, module_name)
        return original(module_name)

    return get_aot_artifacts


# FlashInfer generators that start processes just to *describe* their module: FMHA v2's compiles
# and runs a traits printer with nvcc on every call, before FlashInfer asks for the module (so a
# machine without nvcc cannot use it even when the module is prebuilt). (owner module, generator,
# the module it yields.)
SIDE_EFFECT_GENERATORS = (("flashinfer.jit.attention.modules", "gen_trtllm_fmha_v2_sm120_module", "trtllm_fmha_v2"),)


def _wrap_side_effect_generator(jit_env: Any, original: Any, module: str) -> Any:
    """Where FlashInfer's own provider selection finds `module` (aotc serves it for a target arch),
    answer with FlashInfer's own JitSpec of that name, which FlashInfer then loads from the provider;
    anywhere else run the original generator unchanged."""
    from flashinfer.jit.core import gen_jit_spec

    @functools.wraps(original)
    def generator(*args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs and jit_env.get_aot_artifacts(module):
            return gen_jit_spec(module, [])
        return original(*args, **kwargs)

    return generator


# --- serving cubin-loader artifacts ---------------------------------------------------------------

def _wrap_get_artifact(st: HookState, original: Any) -> Any:
    def get_artifact(file_name: str, sha256: str, session: Any = None) -> bytes:
        if len(sha256) == 64 and set(sha256) <= _DIGEST_CHARS:
            for cache in (st.cache, *(src.cache for src in st.wheels.caches())):
                if not cache.store.has(sha256):
                    continue
                try:
                    data = cache.read_blob(sha256)  # the blob digest is FlashInfer's sha256
                    st.artifacts_served += 1
                    return data
                except (AotcError, KeyError, OSError) as exc:  # a corrupt blob (quarantined) included
                    log.warning("aotc: artifact %s (%s) not served from %s: %s", file_name, sha256[:12],
                                cache.root, exc)
        return original(file_name, sha256, session=session)

    return get_artifact


# --- misses ---------------------------------------------------------------------------------------

def miss_diagnostic(st: HookState, module: str) -> Diagnostic:
    from flashinfer.jit import env as jit_env

    from aotc.flashinfer.presets import presets_containing

    targets = sorted(jit_env._target_cuda_architectures())
    archs = [t for t in targets if t in ARCHES] or ["sm120a"]
    why = st.problems.get(module, "no entry")
    presets = presets_containing(module)
    if presets:
        fix = " && ".join(f"aotc build --arch {a} --flashinfer {presets[0]}" for a in archs)
        fix = f"build it ahead of time: {fix} (presets that list it: {', '.join(presets)})"
    else:
        fix = (f"no preset in flashinfer_presets/ lists it: add its generator call to a preset, then run "
               f"`aotc build --arch {archs[0]} --flashinfer PRESET`")
    if st.on_miss == "error":
        fix += f"; or set {ENV_ON_MISS}=jit to let FlashInfer compile it"
    elif os.environ.get("FLASHINFER_DISABLE_JIT"):
        fix += "; or unset FLASHINFER_DISABLE_JIT to let FlashInfer compile it"
    return Diagnostic(
        code="AOTC-FI-010",
        message=(f"FlashInfer module {module!r} is not in the aotc cache {st.cache.root} nor in an installed "
                 f"kernel wheel for FlashInfer "
                 f"{st.version} and targets {', '.join(targets)} ({why}), and JIT is off"),
        spec=module, fix=fix, details={"module": module, "targets": targets, "cache": str(st.cache.root)},
    )


@functools.cache
def missing_module_error() -> type:
    """FlashInfer's MissingJITCacheError that also is an AotcError (callers may catch either);
    made on first use so that importing this module does not import FlashInfer."""
    from flashinfer.jit.core import MissingJITCacheError

    class FlashInferModuleMissing(MissingJITCacheError, AotcError):
        pass

    return FlashInferModuleMissing


def _miss_error(st: HookState, module: str, spec: Any) -> Exception:
    cls = missing_module_error()
    err = cls.__new__(cls)
    AotcError.__init__(err, miss_diagnostic(st, module))
    err.spec = spec
    return err


def _wrap_build(st: HookState, original: Any) -> Any:
    def build(self: Any, *args: Any, **kwargs: Any) -> Any:
        if st.on_miss == "error":
            raise _miss_error(st, self.name, self)
        return original(self, *args, **kwargs)

    return build


def _wrap_build_and_load(st: HookState, original: Any) -> Any:
    from flashinfer.jit.core import MissingJITCacheError

    def build_and_load(self: Any) -> Any:
        try:
            return original(self)
        except MissingJITCacheError as exc:
            if isinstance(exc, AotcError):
                raise
            raise _miss_error(st, self.name, self) from exc

    return build_and_load


# --- install / uninstall --------------------------------------------------------------------------

def _patch(st: HookState, owner: Any, attr: str, new: Any) -> None:
    old = getattr(owner, attr)
    setattr(owner, attr, new)
    st.patched.append((owner, attr, old, new))


def flashinfer_modules() -> list[Any]:
    """The loaded FlashInfer modules, found once per install(). One pass over sys.modules' names
    that allocates no per-module tuples: after torch and FlashInfer the heap holds ~400k tracked
    objects, and every few hundred allocations can start a garbage collection over them."""
    names = [n for n in sys.modules if n.startswith("flashinfer") and (len(n) == 10 or n[10] == ".")]
    return [m for m in map(sys.modules.get, names) if m is not None]


def _patch_everywhere(st: HookState, replacements: list[tuple[Any, tuple[str, ...], Any]],
                      modules: list[Any]) -> None:
    """Replace each (original, attrs, new) in every loaded FlashInfer module that bound the original
    by one of those names (FlashInfer's modules import functions from each other, so each binding is
    looked up where it is used). One pass over the modules for all replacements."""
    wanted = [(attr, original, new) for original, attrs, new in replacements for attr in attrs]
    for owner in modules:
        namespace = getattr(owner, "__dict__", None) or {}  # no module __getattr__ (lazy imports)
        for attr, original, new in wanted:
            if namespace.get(attr) is original:
                _patch(st, owner, attr, new)


def install(cache: Cache | str | os.PathLike[str] | None = None, *, on_miss: str | None = None) -> dict[str, Any]:
    """Make FlashInfer consult `cache` (default: aotc's default cache) before JIT and before its
    cubin loader. on_miss: "jit" (default; FlashInfer decides, FLASHINFER_DISABLE_JIT included) or
    "error" (no JIT build at all; the error names the module and the `aotc build` command).
    Idempotent; uninstall() undoes it."""
    global _state
    if _state is not None:
        return _state.report()
    mode = (on_miss or os.environ.get(ENV_ON_MISS, "") or "jit").strip().lower()
    if mode not in ON_MISS:
        raise AotcError(Diagnostic("AOTC-FI-011", f"on_miss={mode!r} is not one of {', '.join(ON_MISS)}",
                                   fix=f"set {ENV_ON_MISS} (or on_miss=) to 'jit' or 'error'"))
    import flashinfer
    from flashinfer.jit import core as jit_core
    from flashinfer.jit import cubin_loader
    from flashinfer.jit import env as jit_env

    st = HookState(cache if isinstance(cache, Cache) else Cache(cache), mode, flashinfer.__version__)
    _patch(st, jit_env, "get_aot_artifacts", _wrap_get_aot_artifacts(jit_env, st, jit_env.get_aot_artifacts))
    replacements = [(cubin_loader.get_artifact, ("get_artifact", "get_cubin"),
                     _wrap_get_artifact(st, cubin_loader.get_artifact))]
    for home, attr, module in SIDE_EFFECT_GENERATORS:
        original = getattr(sys.modules.get(home), attr, None)
        if original is not None:
            replacements.append((original, (attr,), _wrap_side_effect_generator(jit_env, original, module)))
    _patch_everywhere(st, replacements, flashinfer_modules())
    _patch(st, jit_core.JitSpecNvcc, "build", _wrap_build(st, jit_core.JitSpecNvcc.build))
    _patch(st, jit_core.JitSpecNvcc, "build_and_load",
           _wrap_build_and_load(st, jit_core.JitSpecNvcc.build_and_load))
    _state = st
    return st.report()


def uninstall() -> None:
    """Restore everything install() replaced and drop aotc's providers; modules already loaded stay
    loaded (FlashInfer memoizes them), new look-ups go to FlashInfer alone."""
    global _state
    st, _state = _state, None
    if st is None:
        return
    from flashinfer.jit import env as jit_env

    for owner, attr, old, new in reversed(st.patched):
        if getattr(owner, attr, None) is new:
            setattr(owner, attr, old)
    jit_env.FLASHINFER_AOT_PROVIDERS = tuple(
        p for p in jit_env.FLASHINFER_AOT_PROVIDERS if not p.provider_id.startswith(PROVIDER_PREFIX))
    root = str(_provider_root(st))
    jit_env.FLASHINFER_AOT_DIRS = tuple(d for d in jit_env.FLASHINFER_AOT_DIRS if not str(d).startswith(root))


def activate_from_env() -> dict[str, Any] | None:
    """install() when AOTC_FLASHINFER is 1/true/yes (cache from AOTC_CACHE_DIR); else nothing."""
    if os.environ.get(ENV_ENABLE, "").strip().lower() in ("1", "true", "yes", "on"):
        return install()
    return None
