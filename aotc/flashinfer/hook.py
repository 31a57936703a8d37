"""Runtime hook: FlashInfer consults the aotc cache before it JIT-compiles a module and before its
cubin loader reads or downloads an artifact. Modules found are handed to FlashInfer as an AOT
provider (FlashInfer's own arch selection and loading then apply); everything else is left to
FlashInfer unless on_miss="error". Runtime side: imports no Jinja2, runs no compiler.

Cost: install() runs in every served process, so importing this module imports no other aotc module
(only what torch and FlashInfer loaded already), and install() adds only aotc.resources (the
cache's location). A module's first look-up is answered by the served record of an earlier process
where one holds (aotc.runtime_folder only: no manifest read, no rehash of the kept .so); else it
imports aotc.keys, reads its ref and manifest through aotc.cache.records and hashes the kept .so;
the Cache class, the blob store and installed kernel wheels load only when a record or the kept .so
is not there (docs/flashinfer.md, "Install cost", "Served records").
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: none of these is imported by install()
    from aotc.cache import Cache
    from aotc.diagnostics import Diagnostic

ENV_ENABLE = "AOTC_FLASHINFER"  # 1: launch.py / activate_from_env() install the hook
ENV_ON_MISS = "AOTC_FLASHINFER_ON_MISS"  # "jit" (default) or "error"
ON_MISS = ("jit", "error")
PROVIDER_PREFIX = "aotc-"
_DIGEST_CHARS = frozenset("0123456789abcdef")


def _warn(msg: str, *args: Any) -> None:
    import logging

    logging.getLogger("aotc.flashinfer").warning(msg, *args)


class LocalCache:
    """The local cache as the hook's first source of modules: what aotc.runtime.sources.CacheSource
    answers (ref, manifest, schema check; the blob's verified bytes), with the two records read
    through aotc.cache.records while they are local files, so that a served module imports neither
    the Cache class nor the blob store. A record that is not a local file (a remote layer may hold
    it) and a blob fetch go through the Cache."""

    __slots__ = ("name", "state")

    def __init__(self, state: HookState):
        self.state = state
        self.name = f"cache {state.cache_root}"

    def resolve(self, spec_key: str) -> dict | None:
        from aotc.cache.records import manifest_problems, resolve_local

        manifest = resolve_local(self.state.cache_root, spec_key)
        if manifest is None:
            manifest = self.state.cache.resolve_ref(spec_key)
        if manifest is not None:
            problems = manifest_problems(manifest)
            if problems:
                from aotc.cache.manifest import ManifestError

                raise ManifestError(problems, f"{manifest.get('key', spec_key)} in {self.name}")
        return manifest

    def read_blob(self, digest: str) -> bytes:
        return self.state.cache.read_blob(digest)

    def ref_path(self, spec_key: str) -> str:
        from aotc.cache.records import record_path

        return str(record_path(self.state.cache_root, "refs", spec_key))

    def manifest_path(self, manifest: dict) -> str:
        """The file resolve() read `manifest` from (its action key names it); "" for a key that names
        no file, whose stamp is then None."""
        from aotc.cache.records import record_path

        try:
            return str(record_path(self.state.cache_root, "actions", manifest["key"]))
        except (ValueError, TypeError):
            return ""

    def origin(self, digest: str) -> str:
        return self.name


class HookState:
    """What install() set up and what the hook served. A plain slotted class: a dataclass costs
    about a millisecond to create at import, on the path of every served process. The Cache object
    and the installed kernel wheels are made on first use."""

    __slots__ = ("_cache", "_wheels", "artifacts_served", "cache_root", "local", "lock", "looked_up", "on_miss",
                 "patched", "problems", "redirected", "root", "served_from", "version")

    def __init__(self, cache_root: Path, cache: Cache | None, on_miss: str, version: str):
        self.cache_root = cache_root
        self._cache = cache  # the Cache given to install(), else made on first use
        self.on_miss = on_miss
        self.version = version
        self.local = LocalCache(self)
        self._wheels: Any = None  # aotc.runtime.sources.WheelSource, made on the first local miss
        self.served_from: dict[str, str] = {}  # module -> the source that served it
        self.patched: list[tuple[Any, str, Any, Any]] = []  # (owner, attr, old, new)
        self.redirected: list[tuple[Any, Any, Any, str]] = []  # (function, its code, the trampoline's, key)
        self.looked_up: dict[str, list[str]] = {}  # module -> aotc archs served
        self.problems: dict[str, str] = {}  # module -> why aotc could not serve it
        self.artifacts_served = 0
        self.lock = threading.Lock()
        self.root: Path | None = None  # the provider folder (_provider_root)

    @property
    def cache(self) -> Cache:
        if self._cache is None:
            from aotc.cache.entries import Cache

            self._cache = Cache(self.cache_root)
        return self._cache

    @property
    def wheels(self) -> Any:
        """Installed kernel wheels, searched after the cache, as the runtime does."""
        if self._wheels is None:
            from aotc.runtime.sources import WheelSource

            self._wheels = WheelSource()
        return self._wheels

    def report(self) -> dict[str, Any]:
        return {"cache": str(self.cache_root), "on_miss": self.on_miss, "flashinfer_version": self.version,
                "served": {m: a for m, a in self.looked_up.items() if a}, "served_from": dict(self.served_from),
                "problems": dict(self.problems), "artifacts_served": self.artifacts_served}

    def sources(self) -> Any:
        """Where modules come from, in order: the local cache, then installed kernel wheels (looked
        for only when the cache has no such module)."""
        yield self.local
        yield self.wheels


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
        import hashlib

        from aotc.runtime_folder import helper_dir

        tag = hashlib.sha256(f"{st.cache_root.resolve()}\0{st.version}".encode()).hexdigest()[:16]
        st.root = helper_dir() / "flashinfer" / tag
    return st.root


def _link(target: Path, link: Path) -> None:
    """Atomically point `link` at `target` (FlashInfer wants <dir>/<module>/<module>.so)."""
    try:
        if os.readlink(link) == str(target):  # the usual case after the first process: one system call
            return
    except OSError:  # absent, or not a link
        pass
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def _preload_needed(needed: list[str]) -> None:
    """Make the module's libcudart resolvable: where the CUDA runtime is not on the loader path
    (pip-installed CUDA), load it by its soname (from the manifest's `needed`) from the pip wheels
    first."""
    for soname in needed:
        if not soname.startswith("libcudart.so"):
            continue
        import ctypes

        try:
            ctypes.CDLL(soname, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            try:
                from cuda.pathfinder import load_nvidia_dynamic_lib

                load_nvidia_dynamic_lib("cudart")
            except Exception as exc:  # noqa: BLE001 - FlashInfer's own load error will say the rest
                _warn("aotc: could not preload %s for FlashInfer modules: %s", soname, exc)


def _materialize(st: HookState, source: Any, module: str, arch: str, manifest: dict[str, Any]) -> list | None:
    """Keep the module's .so in the runtime folder (digest-checked when reused, written from the
    source's verified blob otherwise) and link it where FlashInfer looks. Returns [path, stamp] of the
    kept .so when it was there already, matched its digest and did not change meanwhile (what a
    served record may vouch for), else None."""
    from aotc.flashinfer.index import SO_BLOB
    from aotc.runtime_folder import helper_dir, helper_path, stamp

    digest = manifest["blobs"][SO_BLOB]["sha256"]
    before = stamp(str(helper_dir() / f"{digest}.so"))
    so = helper_path(digest, lambda: source.read_blob(digest))
    after = stamp(str(so))
    _link(so, _provider_root(st) / arch / module / f"{module}.so")
    _preload_needed(manifest.get("needed", []))
    return [str(so), after] if before is not None and before == after else None


# --- served records: what a full look-up served, for later processes -----------------------------
# A process that served a module from the local cache keeps what it read in
# <provider folder>/<module>.served.json: the archs asked, the archs served with their .so digests,
# and the stamp (runtime_folder.stamp) of every file the look-up depended on: each candidate arch's
# ref (absent ones too), each served manifest and each kept .so, taken after that .so passed its
# digest check. A later process whose probes all hold links and registers the same modules without
# reading a manifest or hashing the kept .so again (megabytes: 2 ms on the GPU host, more than the
# served load's whole budget). A kept file whose ctime changed (any write, truncation, replacement or
# chmod since its check) fails its probe, and the full look-up hashes it again. Stamps are taken only
# of kept files whose ctime is SETTLED_NS old, so that a change after the record cannot share the
# recorded ctime on a filesystem with coarse timestamps.
SERVED_FORMAT = 1
SETTLED_NS = 2_000_000_000


def _served_path(st: HookState, module: str) -> Path:
    return _provider_root(st) / f"{module}.served.json"


def _records_allowed() -> bool:
    """No served records with a remote cache layer: it can gain a ref while no local file changes."""
    return not os.environ.get("AOTC_REMOTE")


def _serve_from_record(jit_env: Any, st: HookState, module: str, archs: list[str]) -> bool:
    """Serve `module` as the record of an earlier full look-up says, when every probe still holds;
    False (nothing changed) for no record, a stale or malformed one, or a link that cannot be made."""
    import json

    from aotc.runtime_folder import helper_dir, stamps_hold

    try:
        record = json.loads(_served_path(st, module).read_bytes())
        if record["format"] != SERVED_FORMAT or record["archs"] != archs or not stamps_hold(record["probes"]):
            return False
        served, needed, origin = record["served"], record["needed"], record["origin"]
        if not (isinstance(origin, str) and isinstance(needed, list) and all(isinstance(n, str) for n in needed)
                and isinstance(served, list) and served
                and all(arch in archs and type(digest) is str and len(digest) == 64 and set(digest) <= _DIGEST_CHARS
                        for arch, digest in served)):
            return False
        root = helper_dir()
        for arch, digest in served:
            _link(root / f"{digest}.so", _provider_root(st) / arch / module / f"{module}.so")
    except (OSError, ValueError, KeyError, TypeError):  # absent, unreadable, malformed, or no link
        return False
    for arch, _ in served:
        _register(jit_env, st, module, arch)
    _preload_needed(needed)
    st.served_from[module] = origin
    st.looked_up[module] = [arch for arch, _ in served]
    return True


def _remember_served(st: HookState, module: str, archs: list[str], served: list[list[str]], needed: list[str],
                     origin: str, probes: list) -> None:
    """Write the served record (best-effort: a read-only or full runtime folder only costs later
    processes the full look-up); nothing when a kept file changed too recently to be vouched for."""
    import json
    import time

    from aotc.runtime_folder import write_atomic

    settled = time.time_ns() - SETTLED_NS
    if any(stamp_[4] > settled for path, stamp_ in probes if stamp_ is not None and path.endswith(".so")):
        return
    record = {"format": SERVED_FORMAT, "archs": archs, "served": served, "needed": needed, "origin": origin,
              "probes": probes}
    path = _served_path(st, module)
    try:
        write_atomic(path.parent, path, json.dumps(record).encode())
    except OSError:
        pass


def _candidate_archs(jit_env: Any) -> list[str]:
    """aotc archs whose binaries FlashInfer would accept for at least one of its target archs."""
    from flashinfer.jit._cuda_architecture import cuda_binary_target_compatibility_score as score

    from aotc.flashinfer.index import ARCH_NAMES

    targets = jit_env._target_cuda_architectures()
    return [a for a in ARCH_NAMES if any(score(a, t) is not None for t in targets)]


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
    """Serve `module` for every arch FlashInfer would accept from the first source holding any of
    them: the local cache first; installed kernel wheels (whose discovery costs milliseconds) only
    when the cache has the module for none of the archs. So on SM120, where FlashInfer accepts both
    sm120a and sm120f, a cache holding one of them never sends the other's look-up to the wheels.
    A current served record of an earlier process answers first; a full look-up that served without
    a problem writes one."""
    archs = _candidate_archs(jit_env)
    recording = _records_allowed()
    if recording and _serve_from_record(jit_env, st, module, archs):
        return
    from aotc.flashinfer.index import SO_BLOB, module_key
    from aotc.runtime_folder import stamp

    served: list[str] = []
    probes: list | None = [] if recording else None  # every file the look-up depends on, across sources
    for source in st.sources():
        kept, needed = [], []
        if probes is not None and source is not st.local:
            probes += [[p, stamp(p)] for p in sys.path]  # installing or removing a kernel wheel changes one
        for arch in archs:
            key = module_key(module, st.version, arch)
            if probes is not None:
                refs = [[p, stamp(p)] for p in _ref_paths(st, source, key)]  # before reading them
                probes += refs
            try:
                manifest = source.resolve(key)
                if manifest is None:
                    if probes is not None and any(ref[1] is not None for ref in refs):
                        probes = None  # a ref whose entry is gone: nothing to vouch for
                    continue
                kept_so = _materialize(st, source, module, arch, manifest)
            except Exception as exc:
                from aotc.diagnostics import AotcError  # on this path only

                if not isinstance(exc, (AotcError, OSError, KeyError, ValueError)):
                    raise
                # FlashInfer's try_load contract: an artifact problem is a miss, never a crash.
                st.problems[module] = f"{arch}: {exc}"
                _warn("aotc: not serving FlashInfer module %s for %s from %s: %s", module, arch, source.name, exc)
                probes = None
                continue
            _register(jit_env, st, module, arch)
            served.append(arch)
            digest = manifest["blobs"][SO_BLOB]["sha256"]
            st.served_from[module] = source.origin(digest)
            if probes is not None:
                action = _manifest_file(st, source, manifest, digest)
                probes += [[action, stamp(action)], kept_so]
                if kept_so is None or probes[-2][1] is None:
                    probes = None
                else:
                    kept.append([arch, digest])
                    needed += [n for n in manifest.get("needed", []) if n not in needed]
        if served:
            if probes is not None:
                _remember_served(st, module, archs, kept, needed, st.served_from[module], probes)
            break
    st.looked_up[module] = served


def _ref_paths(st: HookState, source: Any, key: str) -> list[str]:
    """The ref files `source.resolve(key)` reads: the local cache's one, or every installed kernel
    wheel's in the order they are asked."""
    if source is st.local:
        return [st.local.ref_path(key)]
    return [str(wheel.cache.ref_path(key)) for wheel in source.caches()]


def _manifest_file(st: HookState, source: Any, manifest: dict, digest: str) -> str:
    """The manifest file `source` answered from ("" when unknown: its stamp is then None)."""
    if source is st.local:
        return st.local.manifest_path(manifest)
    owner = source.owner(digest)
    try:
        return str(owner.cache.manifest_path(manifest["key"])) if owner is not None else ""
    except (ValueError, TypeError, KeyError):
        return ""


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
            from aotc.diagnostics import AotcError

            for cache in (st.cache, *(src.cache for src in st.wheels.caches())):
                if not cache.store.has(sha256):
                    continue
                try:
                    data = cache.read_blob(sha256)  # the blob digest is FlashInfer's sha256
                    st.artifacts_served += 1
                    return data
                except (AotcError, KeyError, OSError) as exc:  # a corrupt blob (quarantined) included
                    _warn("aotc: artifact %s (%s) not served from %s: %s", file_name, sha256[:12], cache.root,
                          exc)
        return original(file_name, sha256, session=session)

    return get_artifact


# --- misses ---------------------------------------------------------------------------------------

def miss_diagnostic(st: HookState, module: str) -> Diagnostic:
    from flashinfer.jit import env as jit_env

    from aotc.arch import ARCHES
    from aotc.diagnostics import Diagnostic
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
        message=(f"FlashInfer module {module!r} is not in the aotc cache {st.cache_root} nor in an installed "
                 f"kernel wheel for FlashInfer "
                 f"{st.version} and targets {', '.join(targets)} ({why}), and JIT is off"),
        spec=module, fix=fix, details={"module": module, "targets": targets, "cache": str(st.cache_root)},
    )


@functools.cache
def missing_module_error() -> type:
    """FlashInfer's MissingJITCacheError that also is an AotcError (callers may catch either);
    made on first use so that importing this module does not import FlashInfer."""
    from flashinfer.jit.core import MissingJITCacheError

    from aotc.diagnostics import AotcError

    class FlashInferModuleMissing(MissingJITCacheError, AotcError):
        pass

    return FlashInferModuleMissing


def _miss_error(st: HookState, module: str, spec: Any) -> Exception:
    from aotc.diagnostics import AotcError

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
            from aotc.diagnostics import AotcError

            if isinstance(exc, AotcError):
                raise
            raise _miss_error(st, self.name, self) from exc

    return build_and_load


# --- install / uninstall --------------------------------------------------------------------------

def _patch(st: HookState, owner: Any, attr: str, new: Any) -> None:
    old = getattr(owner, attr)
    setattr(owner, attr, new)
    st.patched.append((owner, attr, old, new))


# FlashInfer's modules bind the functions the hook replaces by name (`from .cubin_loader import
# get_artifact`, `get_cubin = get_artifact`, ...). Rebinding each name where it is bound took a pass over
# sys.modules (~2,100 names after torch) and the namespaces of FlashInfer's ~435 modules: ~1 ms, the
# largest part of install() on the 2-core CPU machine. Instead the function object itself is
# redirected: its __code__ becomes a trampoline that calls the hook's replacement, so every binding
# (FlashInfer's, a later import's, a serving engine's own) reaches the hook at a cost independent of
# how many modules are loaded; uninstall() puts the code back. The original behaviour is a copy of
# the function made before the swap. A function that cannot be redirected (not a plain Python
# function, or one with a closure) is rebound by name in every loaded FlashInfer module instead.
_REDIRECTS: dict[str, Any] = {}  # key -> the hook's replacement, called by a redirected function
_KEY = "aotc-redirect-key"  # placeholder in _trampoline's constants, replaced by each redirect's key


def _trampoline(*args: Any, **kwargs: Any) -> Any:
    # Runs as a redirected FlashInfer function, with that function's globals: builtins only.
    return __import__("sys").modules["aotc.flashinfer.hook"]._REDIRECTS["aotc-redirect-key"](*args, **kwargs)


def _redirect(st: HookState, function: Any, key: str, replacement: Any) -> Any:
    """Make `function` call replacement(original) wherever it is bound, where `original` is a copy of
    it that runs its own code; returns that copy, or None when `function` cannot be redirected."""
    import types

    if type(function) is not types.FunctionType or function.__closure__ is not None:
        return None
    original = types.FunctionType(function.__code__, function.__globals__, function.__name__, function.__defaults__)
    original.__kwdefaults__ = function.__kwdefaults__
    original.__qualname__ = function.__qualname__
    original.__doc__ = function.__doc__
    original.__dict__.update(function.__dict__)
    old = function.__code__
    names = {"co_name": old.co_name, **({"co_qualname": old.co_qualname} if hasattr(old, "co_qualname") else {})}
    code = _trampoline.__code__.replace(
        co_consts=tuple(key if isinstance(c, str) and c == _KEY else c for c in _trampoline.__code__.co_consts),
        **names)
    _REDIRECTS[key] = replacement(original)
    function.__code__ = code
    st.redirected.append((function, old, code, key))
    return original


def flashinfer_modules() -> list[Any]:
    """The loaded FlashInfer modules (for a function that cannot be redirected). One pass over
    sys.modules' names that allocates no per-module tuples: after torch and FlashInfer the heap holds
    ~400k tracked objects, and every few hundred allocations can start a garbage collection over
    them."""
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


def _cache_arg(cache: Any) -> tuple[Path, Cache | None]:
    """(cache root, the Cache given or None), without importing the Cache class: a process that
    passes a Cache object has imported it already."""
    entries = sys.modules.get("aotc.cache.entries")
    if entries is not None and isinstance(cache, entries.Cache):
        return cache.root, cache
    if cache is None:
        from aotc.resources import default_cache_dir  # not the cache package: install() reads no record

        return default_cache_dir(), None
    return Path(cache), None


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
        from aotc.diagnostics import AotcError, Diagnostic

        raise AotcError(Diagnostic("AOTC-FI-011", f"on_miss={mode!r} is not one of {', '.join(ON_MISS)}",
                                   fix=f"set {ENV_ON_MISS} (or on_miss=) to 'jit' or 'error'"))
    import flashinfer
    from flashinfer.jit import core as jit_core
    from flashinfer.jit import cubin_loader
    from flashinfer.jit import env as jit_env

    st = HookState(*_cache_arg(cache), mode, flashinfer.__version__)
    _patch(st, jit_env, "get_aot_artifacts", _wrap_get_aot_artifacts(jit_env, st, jit_env.get_aot_artifacts))
    wanted = [(cubin_loader.get_artifact, ("get_artifact", "get_cubin"), functools.partial(_wrap_get_artifact, st))]
    for home, attr, module in SIDE_EFFECT_GENERATORS:
        original = getattr(sys.modules.get(home), attr, None)
        if original is not None:
            wanted.append((original, (attr,), lambda o, m=module: _wrap_side_effect_generator(jit_env, o, m)))
    by_name = [(function, attrs, make(function)) for function, attrs, make in wanted
               if _redirect(st, function, f"{function.__module__}.{attrs[0]}", make) is None]
    if by_name:
        _patch_everywhere(st, by_name, flashinfer_modules())
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
    for function, old, code, key in reversed(st.redirected):
        if function.__code__ is code:
            function.__code__ = old
        _REDIRECTS.pop(key, None)
    jit_env.FLASHINFER_AOT_PROVIDERS = tuple(
        p for p in jit_env.FLASHINFER_AOT_PROVIDERS if not p.provider_id.startswith(PROVIDER_PREFIX))
    root = str(_provider_root(st))
    jit_env.FLASHINFER_AOT_DIRS = tuple(d for d in jit_env.FLASHINFER_AOT_DIRS if not str(d).startswith(root))


def activate_from_env() -> dict[str, Any] | None:
    """install() when AOTC_FLASHINFER is 1/true/yes (cache from AOTC_CACHE_DIR); else nothing."""
    if os.environ.get(ENV_ENABLE, "").strip().lower() in ("1", "true", "yes", "on"):
        return install()
    return None
