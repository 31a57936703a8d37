"""FlashInfer integration, CPU proof: a real FlashInfer module (cascade, 2 TUs) built by aotc for
sm_120a, then loaded through the hook by FlashInfer's own API with JIT disabled, in a fresh process
whose every process start is recorded. Also: presets, misses, uninstall, cubin-loader artifacts,
corrupt blobs. Needs flashinfer-python (aotc[flashinfer]); real nvcc, real FlashInfer sources.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import types
import zipfile
from pathlib import Path

import pytest

flashinfer = pytest.importorskip(
    "flashinfer", reason="flashinfer-python is not installed: pip install -e '.[flashinfer]'"
)

from aotc.build.flashinfer import module_build as fi_build
from aotc.build.flashinfer import ninja
from aotc.build.path_roles import PathRoles
from aotc.build.progress import Progress
from aotc.cache import Cache, header_map
from aotc.diagnostics import AotcError
from aotc.flashinfer.index import module_key
from aotc.flashinfer.presets import load_preset

MODULE = "cascade"  # what flashinfer.jit.cascade:gen_cascade_module() yields (preset `ci`)
ARCH = "sm120a"

# Runs in a fresh interpreter: records every process start (subprocess, posix_spawn, fork, exec),
# then asks FlashInfer for modules through its own API.
_CHILD = textwrap.dedent(
    """
    import json, os, subprocess, sys
    spawned = []
    _popen_init = subprocess.Popen.__init__
    def _spy_popen(self, args, *a, **k):
        spawned.append(args if isinstance(args, str) else [str(x) for x in args])
        return _popen_init(self, args, *a, **k)
    subprocess.Popen.__init__ = _spy_popen
    for name in ("posix_spawn", "posix_spawnp", "fork", "execv", "execve", "execvp", "execvpe", "system"):
        if hasattr(os, name):
            orig = getattr(os, name)
            def spy(*a, _orig=orig, _name=name, **k):
                spawned.append([_name] + [str(x) for x in a[:2]])
                return _orig(*a, **k)
            setattr(os, name, spy)
    import flashinfer
    from flashinfer.jit import env as jit_env
    from flashinfer.jit.core import MissingJITCacheError
    import aotc.flashinfer as afi
    out = {"spawned": spawned}
    step = sys.argv[1]
    exec(step)
    print("RESULT " + json.dumps(out, default=str))
    """
)


def _run_child(step: str, cache: Path, tmp: Path, **env: str) -> dict:
    full_env = {
        **os.environ,
        "FLASHINFER_CUDA_ARCH_LIST": "12.0a",  # an RTX 5090 as FlashInfer sees it, on a CPU machine
        "FLASHINFER_WORKSPACE_BASE": str(tmp / "fi-home"),  # no JIT cache of an earlier run
        "AOTC_CACHE_DIR": str(cache),
        "AOTC_RUNTIME_DIR": str(tmp / "rt"),
        **env,
    }
    (tmp / "rt").mkdir(mode=0o700, exist_ok=True)
    proc = subprocess.run([sys.executable, "-c", _CHILD, textwrap.dedent(step)], env=full_env,
                          capture_output=True, text=True, timeout=600, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"child failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def _aotc_build(root: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "aotc.cli", "build", "--arch", ARCH, "--flashinfer", "ci",
           "--cache-dir", str(root), "-j", "1", "--json", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args[:200])
    return found


def _interrupt_after_first_object(root: Path) -> dict:
    """Start `aotc build --flashinfer ci` and SIGTERM it once ninja has finished one object."""
    ws = Cache(root).tmp_dir / f"flashinfer-{ARCH}"
    log = ws / "ninja" / ".ninja_log"
    proc = _aotc_build(root)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) > 1:
            break
        time.sleep(0.1)
    assert proc.poll() is None, f"the build ended before it could be interrupted: {proc.communicate()}"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    done = [line.split("\t")[3] for line in log.read_text().splitlines()[1:]]
    return {"returncode": proc.returncode, "stderr": err, "done": done, "workspace": ws,
            "mtimes": {p: os.stat(p).st_mtime_ns for p in done}, "left": _processes_mentioning(str(ws))}


@pytest.fixture(scope="module")
def fi_cache(tmp_path_factory) -> tuple[Path, dict, dict]:
    """The cascade module built by `aotc build --flashinfer ci`: first interrupted after one object,
    then run again to the end (which must resume, not start over)."""
    root = tmp_path_factory.mktemp("fi-cache")
    interrupted = _interrupt_after_first_object(root)
    resumed = _aotc_build(root)
    out, err = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, err[-4000:]
    return root, json.loads(out), {**interrupted, "resumed_stderr": err}


# --- build -------------------------------------------------------------------------------------


@pytest.mark.compile
def test_build_stores_verified_sm120a_module(fi_cache):
    root, summary, _ = fi_cache
    assert summary["ok"], json.dumps(summary, indent=1)
    (result,) = summary["results"]
    assert (result["module"], result["status"], result["arch"]) == (MODULE, "built", ARCH)
    assert result["compile_seconds"] > 1  # both objects' compile times, over the two runs
    manifest = Cache(root).resolve_ref(module_key(MODULE, flashinfer.__version__, ARCH))
    assert manifest is not None and manifest["key"] == result["key"]
    assert manifest["cubins"], "cuobjdump found no cubin in the module"
    for cubin in manifest["cubins"]:
        assert cubin["target"] == "sm_120a" and cubin["ok"] and cubin["sass"]["banned"] == []
        for kernel in cubin["kernels"].values():
            assert kernel["smem_static"] <= 101_376
    # FlashInfer's cascade kernels make no driver call: the module must not depend on libcuda,
    # so it loads on machines without a driver (the stub is linked AS_NEEDED).
    assert not any(n.startswith("libcuda.so") for n in manifest["needed"])
    assert "libcudart.so.13" in manifest["needed"]
    # Keys see installation paths by role only.
    assert not any("/site-packages/" in f for f in manifest["flags"])
    assert any(h.startswith("<flashinfer>/data/include/flashinfer/") for h in header_map.inputs(manifest, Cache(root).read_blob)["headers"])
    # `aotc ls` shows the module's largest kernel (registers, SMEM), as for aotc's own kernels.
    ls = subprocess.run([sys.executable, "-m", "aotc.cli", "ls", "--cache-dir", str(root), "--family", "flashinfer"],
                        capture_output=True, text=True, check=True).stdout.splitlines()
    regs = max(k["registers"] for c in manifest["cubins"] for k in c["kernels"].values())
    assert ls[1].split()[:3] == [result["key"][:12], ARCH, str(regs)] and ls[1].endswith(MODULE)


@pytest.mark.compile
def test_interrupted_build_stops_its_compilers_and_resumes(fi_cache):
    _, summary, run = fi_cache
    assert run["returncode"] != 0 and "interrupted" in run["stderr"]
    assert run["left"] == [], f"compilers outlived the interrupted build: {run['left']}"
    assert len(run["done"]) == 1 and run["done"][0].endswith(".o")
    # The resumed run compiled only what was missing: its progress names one object and the link,
    # never the object the first run finished.
    finished = Path(run["done"][0]).name
    steps = [ln for ln in run["resumed_stderr"].splitlines() if ln.startswith("[")]
    assert len(steps) == 2 and not any(finished in ln for ln in steps), steps
    assert any(ln.endswith(")") and f"{MODULE}.so" in ln for ln in steps)
    assert not run["workspace"].exists(), "a build that stored every module must remove its workspace"
    assert summary["kept_workspaces"] == []


@pytest.mark.compile
def test_second_build_is_a_hit_without_compiling(fi_cache):
    root, first, _ = fi_cache
    again = fi_build.build_modules(["ci"], [ARCH], Cache(root), jobs=1)
    (result,) = again.results
    assert result.status == "hit" and result.key == first["results"][0]["key"]
    assert result.seconds < 20, f"a hit re-hashes inputs only; took {result.seconds:.1f}s"


def test_ninja_run_keeps_going_and_names_each_failed_output(tmp_path):
    """Real ninja over two modules' build files: one module's failure is attributed to it alone,
    the other module still builds, and the compiler's error text is kept for the diagnostic."""
    files = []
    missing = "echo 'fatal error: cublasLt.h: No such file or directory' >&2; exit 1"
    for name, command in (("good", "echo ok > $out"), ("bad", missing)):
        d = tmp_path / name
        d.mkdir()
        (d / "build.ninja").write_text(f"rule cc\n  command = {command}\nbuild {d}/x.o: cc {tmp_path}/src\n")
        files.append(str(d / "build.ninja"))
    (tmp_path / "src").write_text("")
    ws = ninja.Workspace(tmp_path / "ws")
    ws.write(files)
    steps = []
    run = ws.run([f"{tmp_path}/good/x.o", f"{tmp_path}/bad/x.o"], 1, dict(os.environ),
                 lambda n, total, out: steps.append((n, total)))
    assert run.returncode != 0 and (tmp_path / "good" / "x.o").read_text() == "ok\n"
    assert list(run.failures) == [f"{tmp_path}/bad/x.o"]
    assert "cublasLt.h" in run.failure_text([f"{tmp_path}/bad/x.o"])
    done = (tmp_path / "ws" / ".ninja_log").read_text().splitlines()[1:]
    assert steps[-1][1] == 2 and [line.split("\t")[3] for line in done] == [f"{tmp_path}/good/x.o"]
    assert "pip install nvidia-cublas" in ninja.missing_header_fix(run.log)
    again = ws.run([f"{tmp_path}/good/x.o"], 1, dict(os.environ))
    assert "no work to do" in again.log  # the log kept in the workspace is what makes a build resumable


def test_progress_names_the_module_of_each_step():
    import io

    stream = io.StringIO()
    progress = fi_build.step_reporter(Progress(stream=stream), "sm120a",
                                      {"/ws/fp4_quantization_120": "fp4_quantization_120",
                                       "/ws/fp4_quantization_120f": "fp4_quantization_120f"})
    progress(1, 2, "/ws/fp4_quantization_120f/kernels.cuda.o")
    progress(2, 2, "/ws/fp4_quantization_120/fp4_quantization_120.so")
    assert [ln.split(" (")[0] for ln in stream.getvalue().splitlines()] == [
        "[1/2] sm120a fp4_quantization_120f: kernels.cuda.o",
        "[2/2] sm120a fp4_quantization_120: fp4_quantization_120.so"]


def test_missing_header_fix_reads_real_compiler_output(tmp_path):
    src = tmp_path / "uses_cusparse.cpp"
    src.write_text("#include <cusparse.h>\n")
    proc = subprocess.run(["c++", "-fsyntax-only", str(src)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode != 0
    assert "pip install nvidia-cusparse" in ninja.missing_header_fix(proc.stderr)
    assert ninja.missing_header_fix("fatal error: some_unknown_header.h: No such file or directory") is None


# --- runtime hook ------------------------------------------------------------------------------


@pytest.mark.compile
def test_hook_serves_module_with_jit_disabled_and_starts_no_process(fi_cache, tmp_path):
    root, _, _ = fi_cache
    out = _run_child(
        """
        from flashinfer.jit.cascade import gen_cascade_module
        try:
            gen_cascade_module().build_and_load()
            out["without_hook"] = "loaded"
        except MissingJITCacheError as e:
            out["without_hook"] = type(e).__name__
        before = list(spawned)
        afi.install()
        import flashinfer.cascade
        module = flashinfer.cascade.get_cascade_module()
        out["functions"] = sorted(n for n in ("merge_state", "merge_state_in_place", "merge_states")
                                  if hasattr(module, n))
        out["path"] = str(gen_cascade_module().get_library_path())
        out["status"] = afi.status()
        out["spawned_after_install"] = spawned[len(before):]
        out["jit_dir_has_module"] = (jit_env.FLASHINFER_JIT_DIR / "cascade").exists()
        """,
        root, tmp_path, FLASHINFER_DISABLE_JIT="1",
    )
    assert out["without_hook"] == "MissingJITCacheError"  # FlashInfer alone cannot serve it
    assert out["functions"] == ["merge_state", "merge_state_in_place", "merge_states"]
    assert out["status"]["served"] == {MODULE: [ARCH]}
    assert f"/{ARCH}/{MODULE}/{MODULE}.so" in out["path"]
    assert out["spawned_after_install"] == []  # serving the module started no process at all
    compilers = ("ninja", "nvcc", "c++", "g++", "gcc", "cicc", "ptxas")
    assert not [c for c in out["spawned"] if any(x in str(c) for x in compilers)]
    assert out["jit_dir_has_module"] is False


@pytest.mark.compile
def test_fmha_v2_generator_runs_no_compiler_only_where_aotc_holds_the_module(fi_cache, tmp_path):
    """FlashInfer's FMHA v2 generator compiles and runs a traits printer with nvcc on every call. With
    the module in the cache the hook answers the generator instead (no process); without it the
    original generator runs. CI cannot build FMHA v2 (its sources need cuBLAS headers), so a real
    module built here is stored under FMHA v2's name: what FlashInfer's own getter returns is it."""
    root, summary, _ = fi_cache
    held = tmp_path / "held"
    shutil.copytree(root, held)
    Cache(held).set_ref(module_key("trtllm_fmha_v2", flashinfer.__version__, ARCH), summary["results"][0]["key"],
                        {"family": "flashinfer", "name": "trtllm_fmha_v2", "arch": ARCH})
    step = """
        afi.install()
        import flashinfer.prefill
        before = len(spawned)
        try:
            module = flashinfer.prefill.get_trtllm_fmha_v2_sm120_module()
            out["module_functions"] = sorted(n for n in ("merge_state", "merge_states") if hasattr(module, n))
        except Exception as e:
            out["error"] = type(e).__name__
        out["spawned_by_call"] = spawned[before:]
        afi.uninstall()
        import flashinfer.jit.attention.modules as modules
        gen = flashinfer.prefill.gen_trtllm_fmha_v2_sm120_module
        out["restored"] = gen is modules.gen_trtllm_fmha_v2_sm120_module and not hasattr(gen, "__wrapped__")
        """
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    out = _run_child(step, held, tmp_path / "a", FLASHINFER_DISABLE_JIT="1")
    assert out["module_functions"] == ["merge_state", "merge_states"], out
    assert out["spawned_by_call"] == []
    assert out["restored"]
    alone = _run_child(step, root, tmp_path / "b", FLASHINFER_DISABLE_JIT="1")
    assert "module_functions" not in alone  # not held: FlashInfer's generator ran, then found no module
    assert any("print_traits" in str(c) for c in alone["spawned_by_call"]), alone["spawned_by_call"]


@pytest.mark.compile
def test_module_shipped_in_a_kernel_wheel_is_served_and_checked(fi_cache, tmp_path):
    """`aotc wheel` packs the FlashInfer module; installed (pip --target), the hook serves it with
    an empty local cache; `aotc wheel --check` verifies the .so blob and its cubin targets."""
    from aotc.arch import get_arch
    from aotc.build.wheel_pack import build_wheel, check_wheel, select_entries

    root, _, _ = fi_cache
    entries = select_entries(Cache(root), [get_arch(ARCH)])
    assert [m["family"] for _, m in entries] == ["flashinfer"]
    wheel = build_wheel(Cache(root), entries, "aotc-kernels-fi-test", tmp_path / "dist")
    report = check_wheel(wheel, get_arch(ARCH))
    assert report.ok, [d.format() for d in report.diagnostics]
    assert report.kernels[0]["name"] == MODULE and report.kernels[0]["elf_target"] == "sm120a"
    assert report.meta["flashinfer_versions"] == [flashinfer.__version__]
    assert not check_wheel(wheel, get_arch("sm90a")).ok  # sm_120a cubins cannot run on an H100

    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
                          str(site), str(wheel)], capture_output=True, text=True, check=False)
    assert pip.returncode == 0, pip.stderr
    local = tmp_path / "empty-cache"
    local.mkdir()
    step = """
        import sys
        afi.install()
        import flashinfer.cascade
        module = flashinfer.cascade.get_cascade_module()
        out["has_merge_state"] = hasattr(module, "merge_state")
        out["status"] = afi.status()
        out["wheels_discovered"] = "aotc.runtime.installed_wheels" in sys.modules
        """
    wheel_path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    out = _run_child(step, local, tmp_path, FLASHINFER_DISABLE_JIT="1", PYTHONPATH=wheel_path)
    assert out["has_merge_state"] and out["status"]["served"] == {MODULE: [ARCH]}
    assert out["status"]["served_from"] == {MODULE: "kernel wheel aotc-kernels-fi-test"}
    assert not [c for c in out["spawned"] if any(x in str(c) for x in ("ninja", "nvcc"))]

    # Served records cover wheel modules too: the first process kept the .so, a later one (its ctime
    # settled) hashes it and writes the record, and the next serves from it without the wheels'
    # discovery. Once the local cache (asked first) holds the module, the record no longer holds.
    time.sleep(hook_settled_s())
    _run_child(step, local, tmp_path, FLASHINFER_DISABLE_JIT="1", PYTHONPATH=wheel_path)
    recalled = _run_child(step, local, tmp_path, FLASHINFER_DISABLE_JIT="1", PYTHONPATH=wheel_path)
    assert recalled["has_merge_state"] and not recalled["wheels_discovered"]
    assert recalled["status"]["served_from"] == {MODULE: "kernel wheel aotc-kernels-fi-test"}
    shutil.copytree(root / "v1", local / "v1", dirs_exist_ok=True)
    gained = _run_child(step, local, tmp_path, FLASHINFER_DISABLE_JIT="1", PYTHONPATH=wheel_path)
    assert gained["has_merge_state"] and gained["status"]["served_from"] == {MODULE: f"cache {local}"}

    # A modified .so inside the wheel is caught by the check.
    tampered = tmp_path / "tampered.whl"
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if "/blobs/" in item.filename:
                import zstandard

                raw = bytearray(zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 31))
                raw[len(raw) // 2] ^= 0xFF
                data = zstandard.ZstdCompressor().compress(bytes(raw))
            dst.writestr(item, data)
    assert any(d.code == "AOTC-WHEEL-005" for d in check_wheel(tampered).diagnostics)


@pytest.mark.compile
def test_env_var_launcher_serves_module(fi_cache, tmp_path):
    root, _, _ = fi_cache
    script = tmp_path / "user_program.py"
    script.write_text("import flashinfer.cascade, aotc.flashinfer as a\n"
                      "flashinfer.cascade.get_cascade_module()\nprint('SERVED', a.status()['served'])\n")
    env = {**os.environ, "AOTC_FLASHINFER": "1", "AOTC_CACHE_DIR": str(root), "FLASHINFER_DISABLE_JIT": "1",
           "FLASHINFER_CUDA_ARCH_LIST": "12.0a", "FLASHINFER_WORKSPACE_BASE": str(tmp_path / "fi-home"),
           "AOTC_RUNTIME_DIR": str(tmp_path / "rt")}
    proc = subprocess.run([sys.executable, "-m", "aotc.flashinfer", str(script)], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"SERVED {{'{MODULE}': ['{ARCH}']}}" in proc.stdout


def test_miss_in_error_mode_names_module_and_command(tmp_path):
    out = _run_child(
        """
        from flashinfer.jit import gen_batch_decode_module
        import torch
        afi.install(on_miss="error")
        spec = gen_batch_decode_module(torch.bfloat16, torch.bfloat16, torch.bfloat16, torch.int32,
                                       128, 128, 0, False, False)
        try:
            spec.build_and_load()
        except MissingJITCacheError as e:
            out["error"] = str(e)
            out["codes"] = [d.code for d in e.diagnostics]
            out["name"] = spec.name
        out["ninja"] = [c for c in spawned if "ninja" in str(c)]
        """,
        tmp_path / "empty-cache", tmp_path,
    )
    assert out["codes"] == ["AOTC-FI-010"]
    assert repr(out["name"]) in out["error"] and "is not in the aotc cache" in out["error"]
    assert "aotc build --arch sm120a --flashinfer attention" in out["error"]
    assert out["ninja"] == []  # no build was attempted


def test_uninstall_restores_flashinfer(tmp_path):
    from flashinfer.jit import core as jit_core
    from flashinfer.jit import cubin_loader
    from flashinfer.jit import env as jit_env

    from aotc.flashinfer import hook

    originals = (jit_env.get_aot_artifacts, cubin_loader.get_artifact, jit_core.JitSpecNvcc.build,
                 jit_core.JitSpecNvcc.build_and_load, jit_env.FLASHINFER_AOT_PROVIDERS)
    code = cubin_loader.get_artifact.__code__
    hook.install(Cache(tmp_path))
    assert hook.installed() and jit_env.get_aot_artifacts is not originals[0]
    assert cubin_loader.get_artifact.__code__ is not code  # redirected in place (every binding reaches aotc)
    assert hook.install(Cache(tmp_path))["cache"] == str(tmp_path)  # idempotent
    hook.uninstall()
    assert not hook.installed()
    assert (jit_env.get_aot_artifacts, cubin_loader.get_artifact, jit_core.JitSpecNvcc.build,
            jit_core.JitSpecNvcc.build_and_load, jit_env.FLASHINFER_AOT_PROVIDERS) == originals
    assert cubin_loader.get_artifact.__code__ is code and not hook._REDIRECTS


def test_cubin_loader_artifact_served_by_sha256(tmp_path, monkeypatch):
    from flashinfer.jit import cubin_loader

    from aotc.flashinfer import hook

    payload = tmp_path / "kernel_sm120a.cubin"
    payload.write_bytes(b"\x7fELF not really a cubin, but bytes with a digest" * 10)
    cache = Cache(tmp_path / "cache")
    stored = fi_build.store_artifacts([payload], cache)
    digest = stored[payload.name]
    monkeypatch.setenv("FLASHINFER_NO_DOWNLOAD", "1")  # FlashInfer alone would refuse: not on disk
    with pytest.raises(RuntimeError, match="Artifact not found locally"):
        cubin_loader.get_artifact("aotc-test/kernel_sm120a.cubin", digest)
    engine = types.ModuleType("some_engine")  # a serving engine that bound FlashInfer's name before install()
    engine.get_cubin = cubin_loader.get_cubin
    hook.install(cache)
    try:
        assert cubin_loader.get_artifact("aotc-test/kernel_sm120a.cubin", digest) == payload.read_bytes()
        assert hook.status()["artifacts_served"] == 1
        assert engine.get_cubin("aotc-test/kernel_sm120a.cubin", digest) == payload.read_bytes()
        assert hook.status()["artifacts_served"] == 2
        with pytest.raises(RuntimeError, match="Artifact not found locally"):  # unknown digest: FlashInfer's path
            cubin_loader.get_artifact("aotc-test/other.cubin", "0" * 64)
    finally:
        hook.uninstall()


def test_function_that_cannot_be_redirected_is_rebound_by_name(tmp_path, monkeypatch):
    """A replaced FlashInfer function that cannot be redirected in place (here: one with a closure) is
    rebound by name in every loaded FlashInfer module that bound it, and restored by uninstall()."""
    from aotc.flashinfer import hook

    def make_generator():
        cell = "original"

        def generator():
            return cell

        return generator

    home = types.ModuleType("flashinfer._aotc_test_home")
    home.generator = make_generator()
    user = types.ModuleType("flashinfer._aotc_test_user")
    user.generator = home.generator
    monkeypatch.setitem(sys.modules, home.__name__, home)
    monkeypatch.setitem(sys.modules, user.__name__, user)
    monkeypatch.setattr(hook, "SIDE_EFFECT_GENERATORS", ((home.__name__, "generator", "no_such_module"),))
    original = home.generator
    hook.install(Cache(tmp_path))
    try:
        assert home.generator is not original and user.generator is home.generator
        assert home.generator.__wrapped__ is original and user.generator() == "original"  # not held: runs it
    finally:
        hook.uninstall()
    assert home.generator is original and user.generator is original


def hook_settled_s() -> float:
    """How old a kept .so must be before a served record vouches for it."""
    from aotc.flashinfer.hook import SETTLED_NS

    return SETTLED_NS / 1e9


def _stored_fake_module(root: Path, arch: str = ARCH, sm: int = 120) -> tuple[Cache, str, bytes]:
    """A FlashInfer module entry whose .so is not a real library: enough to see what the hook reads
    and checks before FlashInfer would load it."""
    cache = Cache(root)
    so = b"\x7fELF not a real shared library " * 64
    key = "ab" * 32
    cache.put_entry(key, {"so": so}, {"name": MODULE, "family": "flashinfer", "params": {"module": MODULE},
                                      "arch": arch, "target": {"sm": sm, "variant": "a"},
                                      "toolchain": {"nvcc_version": "13.0"}, "flashinfer_version": flashinfer.__version__})
    cache.set_ref(module_key(MODULE, flashinfer.__version__, arch), key,
                  {"family": "flashinfer", "name": MODULE, "arch": arch})
    return cache, key, so


def test_served_module_reads_records_without_the_cache_class_and_hashes_the_kept_copy(tmp_path):
    """install() and a served module in fresh processes: install() imports only aotc.resources (where
    the default cache is) besides the hook; serving a module whose .so the runtime folder keeps reads its
    ref and manifest through aotc.cache.records and imports neither the Cache class, the blob store,
    zstandard, the diagnostics, the arch table, the runtime package nor the kernel-wheel scan. The kept
    .so is hashed on a full look-up (no process here finds a served record to read: records are
    tested below): a tampered one is replaced from the cache (its digest), never handed over.
    (FlashInfer targets sm_90a here, as in tools/device_runtime.py's hook part; SM120's two accepted
    archs: the next test.)"""
    import hashlib

    _, _, so = _stored_fake_module(tmp_path / "cache", "sm90a", 90)
    digest = hashlib.sha256(so).hexdigest()
    step = """
        import sys
        before = set(sys.modules)
        afi.install()
        out["install"] = sorted(m for m in set(sys.modules) - before if m.startswith(("aotc", "zstandard")))
        before = set(sys.modules)
        out["artifacts"] = len(jit_env.get_aot_artifacts("cascade"))
        out["serve"] = sorted(m for m in set(sys.modules) - before if m.startswith(("aotc", "zstandard")))
        out["status"] = afi.status()
        """
    first = _run_child(step, tmp_path / "cache", tmp_path, FLASHINFER_CUDA_ARCH_LIST="9.0a")  # writes the copy
    assert first["artifacts"] == 1 and first["status"]["served"] == {MODULE: ["sm90a"]}
    assert "aotc.cache.store" in first["serve"]  # the first process fetched the blob
    kept = tmp_path / "rt" / f"{digest}.so"
    assert kept.read_bytes() == so
    second = _run_child(step, tmp_path / "cache", tmp_path, FLASHINFER_CUDA_ARCH_LIST="9.0a")
    assert second["install"] == ["aotc.flashinfer.hook", "aotc.resources"]
    assert second["artifacts"] == 1 and second["status"]["problems"] == {}
    heavy = ("aotc.cache.entries", "aotc.cache.store", "aotc.cache.manifest", "aotc.diagnostics", "aotc.arch",
             "aotc.runtime", "aotc.runtime.errors", "aotc.runtime.sources", "aotc.runtime.installed_wheels",
             "zstandard")
    assert [m for m in heavy if m in second["serve"]] == [], second["serve"]
    assert "aotc.runtime_folder" in second["serve"]  # the kept copy was read (and hashed) there

    tampered = bytearray(so)
    tampered[len(tampered) // 2] ^= 0xFF
    kept.write_bytes(bytes(tampered))
    third = _run_child(step, tmp_path / "cache", tmp_path, FLASHINFER_CUDA_ARCH_LIST="9.0a")
    assert third["artifacts"] == 1 and kept.read_bytes() == so  # refetched from the cache, by its digest
    assert "aotc.cache.store" in third["serve"]


def test_served_record_skips_rehashing_until_a_probed_file_changes(tmp_path, monkeypatch):
    """A full look-up that found the kept .so intact (digest-checked, unchanged meanwhile, its ctime
    settled) writes a served record; a later install serves from it without hashing the .so or
    reading a manifest. A write to the kept .so, a ref pointing elsewhere, or a remote cache layer
    sends the look-up back to the full path, which hashes again and never serves changed bytes."""
    import hashlib

    from flashinfer.jit import env as jit_env

    from aotc import runtime_folder
    from aotc.flashinfer import hook

    cache, _, so = _stored_fake_module(tmp_path / "cache", "sm90a", 90)
    digest = hashlib.sha256(so).hexdigest()
    monkeypatch.setenv("FLASHINFER_CUDA_ARCH_LIST", "9.0a")
    monkeypatch.setenv("AOTC_RUNTIME_DIR", str(tmp_path / "rt"))
    monkeypatch.delenv("AOTC_REMOTE", raising=False)
    hashed: list[str] = []
    real_hashes_to = runtime_folder._hashes_to
    monkeypatch.setattr(runtime_folder, "_hashes_to", lambda path, d: hashed.append(d) or real_hashes_to(path, d))

    def serve() -> dict:
        hashed.clear()
        hook.install(str(tmp_path / "cache"))
        try:
            assert len(jit_env.get_aot_artifacts(MODULE)) == 1
            return hook.status()
        finally:
            hook.uninstall()

    record = tmp_path / "rt" / "flashinfer"
    serve()  # writes the kept copy: nothing to vouch for yet
    serve()  # hashes the copy, but it was written just now (ctime not settled): still no record
    assert hashed == [digest] and not list(record.rglob("*.served.json"))
    monkeypatch.setattr(hook, "SETTLED_NS", 0)
    serve()
    assert hashed == [digest] and len(list(record.rglob("*.served.json"))) == 1
    status = serve()
    assert hashed == [] and status["served"] == {MODULE: ["sm90a"]}, hashed  # from the record
    link = next(record.rglob(f"{MODULE}.so"))
    assert link.resolve() == tmp_path / "rt" / f"{digest}.so" and link.read_bytes() == so

    kept = tmp_path / "rt" / f"{digest}.so"
    time.sleep(0.05)  # past the filesystem's timestamp tick, which SETTLED_NS covers in real use
    tampered = bytearray(so)
    tampered[7] ^= 0xFF
    kept.write_bytes(bytes(tampered))  # same size; the write moves its ctime
    serve()
    assert hashed == [digest] and kept.read_bytes() == so  # rehashed, refetched from the cache

    other = b"\x7fELF another module build " * 64
    cache.put_entry("cd" * 32, {"so": other}, {"name": MODULE, "family": "flashinfer", "params": {"module": MODULE},
                                               "arch": "sm90a", "target": {"sm": 90, "variant": "a"}})
    cache.set_ref(module_key(MODULE, flashinfer.__version__, "sm90a"), "cd" * 32,
                  {"family": "flashinfer", "name": MODULE})
    serve()
    assert hashed == [hashlib.sha256(other).hexdigest()]
    assert next(record.rglob(f"{MODULE}.so")).read_bytes() == other

    serve()  # a record of the new entry
    monkeypatch.setenv("AOTC_REMOTE", "redis://127.0.0.1:1/0")  # a layer that could gain refs unseen
    serve()
    assert hashed == [hashlib.sha256(other).hexdigest()]


def test_cache_holding_one_of_sm120s_two_accepted_archs_never_scans_kernel_wheels(tmp_path):
    """FlashInfer accepts sm120a and sm120f builds for an sm_120a target. A cache holding only the
    sm120a module serves it, and the sm120f look-up does not go on to the installed kernel wheels
    (their discovery costs milliseconds per process); with nothing in the cache the wheels are asked."""
    _stored_fake_module(tmp_path / "cache", "sm120a", 120)
    step = """
        import sys
        afi.install()
        from flashinfer.jit import env as jit_env
        from aotc.flashinfer import hook
        out["candidates"] = hook._candidate_archs(jit_env)
        before = set(sys.modules)
        out["artifacts"] = len(jit_env.get_aot_artifacts("cascade"))
        out["serve"] = sorted(m for m in set(sys.modules) - before if m.startswith("aotc"))
        out["status"] = afi.status()
        """
    out = _run_child(step, tmp_path / "cache", tmp_path, FLASHINFER_CUDA_ARCH_LIST="12.0a")
    assert {"sm120a", "sm120f"} <= set(out["candidates"]), out["candidates"]
    assert out["status"]["served"] == {MODULE: ["sm120a"]} and out["artifacts"] == 1
    assert "aotc.runtime.installed_wheels" not in out["serve"], out["serve"]
    empty = _run_child(step, tmp_path / "empty", tmp_path, FLASHINFER_CUDA_ARCH_LIST="12.0a")
    assert empty["status"]["served"] == {} and "aotc.runtime.installed_wheels" in empty["serve"], empty["serve"]


def test_hook_refuses_records_that_fail_their_checks(tmp_path, monkeypatch):
    """The records the hook reads without the Cache class keep the cache's checks: a manifest edited on
    disk (its checksum no longer matches) and a malformed one are reported problems with their codes,
    never served and never a crash, and FlashInfer is left to decide."""
    from flashinfer.jit import env as jit_env

    from aotc.flashinfer import hook

    cache, key, _ = _stored_fake_module(tmp_path / "cache")
    path = cache.manifest_path(key)
    monkeypatch.setenv("FLASHINFER_CUDA_ARCH_LIST", "12.0a")
    monkeypatch.setenv("AOTC_RUNTIME_DIR", str(tmp_path / "rt"))
    edited = json.loads(path.read_text())
    edited["name"] = "edited"
    path.write_text(json.dumps(edited, indent=1, sort_keys=True))
    for expected in ("AOTC-CACHE-002", "AOTC-CACHE-005"):
        hook.install(str(tmp_path / "cache"))
        try:
            assert jit_env.get_aot_artifacts(MODULE) == ()
            status = hook.status()
            assert status["served"] == {} and expected in status["problems"][MODULE], status["problems"]
        finally:
            hook.uninstall()
        malformed = {k: v for k, v in edited.items() if k not in ("target", "record_sha256")}
        cache.write_json(path, malformed)  # a valid checksum over a manifest without its target


def test_arch_names_of_the_hook_are_aotcs():
    from aotc.arch import ARCHES
    from aotc.flashinfer.index import ARCH_NAMES

    assert ARCH_NAMES == tuple(ARCHES)


@pytest.mark.compile
def test_corrupt_module_blob_is_not_loaded(fi_cache, tmp_path):
    root, _, _ = fi_cache
    copy = tmp_path / "cache"
    shutil.copytree(root, copy)
    manifest = Cache(copy).resolve_ref(module_key(MODULE, flashinfer.__version__, ARCH))
    blob = Cache(copy).store.path(manifest["blobs"]["so"]["sha256"])
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    out = _run_child(
        """
        afi.install()
        import flashinfer.cascade
        try:
            flashinfer.cascade.get_cascade_module()
            out["loaded"] = True
        except MissingJITCacheError as e:
            out["error"] = str(e)
        out["problems"] = afi.status()["problems"]
        """,
        copy, tmp_path, FLASHINFER_DISABLE_JIT="1",
    )
    assert "loaded" not in out
    assert "AOTC-CACHE-001" in out["problems"][MODULE] or "corrupt" in out["problems"][MODULE]
    assert "aotc build --arch sm120a --flashinfer ci" in out["error"]
    assert list((copy / "v1" / "quarantine").iterdir()), "the corrupt blob was not quarantined"


# --- presets -----------------------------------------------------------------------------------


def test_presets_expand_sweeps_and_references():
    attention = load_preset("attention")
    prefill = [c for c in attention.calls if c.generator.endswith("_gen_batch_prefill_primary_module")]
    assert len(prefill) == 6 and len(attention.calls) == 12
    args = [dict(c.args) for c in prefill]
    assert {(a["dtype_q"], a["head_dim_qk"]) for a in args} == {
        (d, h) for d in ("float16", "bfloat16") for h in (64, 128, 256)}
    assert all(a["head_dim_vo"] == a["head_dim_qk"] and a["dtype_o"] == a["dtype_q"] for a in args)
    names = {c.generator.split(":")[1] for c in load_preset("sm120").calls}
    assert names == {"gen_gemm_sm120_module_cutlass_fp4", "gen_cutlass_fused_moe_sm120_module",
                     "gen_trtllm_fmha_v2_sm120_module", "gen_fp4_quantization_sm120_module",
                     "gen_fp4_quantization_sm120f_module"}


def test_bad_preset_says_what_and_where(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[module]]\ngenerator = "not a generator"\n')
    with pytest.raises(AotcError) as info:
        load_preset(str(bad))
    diag = info.value.diagnostics[0]
    assert diag.code == "AOTC-FI-001" and diag.file == str(bad) and "module #1" in diag.message
    with pytest.raises(AotcError, match="known presets: .*attention"):
        load_preset("no-such-preset")


def test_sm120_presets_generate_flashinfer_build_files(tmp_path):
    """The large presets are buildable: FlashInfer's generators give SM120 nvcc modules (no compile)."""
    from aotc.build.flashinfer import worker

    env = {**os.environ, "FLASHINFER_CUDA_ARCH_LIST": "12.0a", "FLASHINFER_WORKSPACE_BASE": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", worker.__name__], input=json.dumps(
        {"presets": ["sm120", "attention"], "arch": ARCH}), env=env, capture_output=True, text=True,
        timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    modules = {m.get("name") or m["call"]: m for m in json.loads(proc.stdout.strip().splitlines()[-1])["modules"]}
    for name in ("fp4_gemm_cutlass_sm120", "fused_moe_120", "fp4_quantization_120", "fp4_quantization_120f"):
        assert "error" not in modules[name], modules[name].get("error")
        ninja = Path(modules[name]["ninja"]).read_text()
        assert "sm_120" in ninja and "sm_100" not in ninja
    assert len(modules["fused_moe_120"]["sources"]) == 96
    assert sum(1 for m in modules.values() if m.get("name", "").startswith("batch_")) == 12


def test_portable_keys_and_ninja_inputs():
    text = ("build /ws/a.cuda.o: cuda_compile /pkg/csrc/a.cu\n"
            "build /ws/e.o: embed_cubin /ws/a.cuda.o | /ws/k.cubin\n"
            "build /ws/m.so: link /ws/e.o\n")
    assert ninja.inputs(text) == ["/pkg/csrc/a.cu", "/ws/k.cubin"]
    assert ninja.objects(text, "/ws/m.so") == ["/ws/a.cuda.o", "/ws/e.o"]
    roles = PathRoles({"<ws>": "/ws", "<pkg>": "/pkg", "<pkg-csrc>": "/pkg/csrc"}.items())
    assert roles.portable("-I/pkg/csrc -I/pkg/include /ws/x") == "-I<pkg-csrc> -I<pkg>/include <ws>/x"
    assert roles.real("<pkg-csrc>/a.cu") == "/pkg/csrc/a.cu" and roles.real("/usr/x.h") == "/usr/x.h"


def test_missing_flashinfer_source_is_a_coded_error_naming_the_file(tmp_path):
    """A FlashInfer installed without its JIT sources (data/csrc stripped: enough to serve prebuilt
    modules, not to build them): planning a module whose ninja file lists a missing source is
    AOTC-FI-013 naming the module and the file, not a traceback; present sources hash as before."""
    present = tmp_path / "csrc" / "norm.cu"
    present.parent.mkdir()
    present.write_text("// a source\n")
    roles = PathRoles({"<pkg-csrc>": str(tmp_path / "csrc")}.items())
    hashed = fi_build._hash_files([str(present)], roles, "norm")
    assert list(hashed) == ["<pkg-csrc>/norm.cu"] and len(hashed["<pkg-csrc>/norm.cu"]) == 64
    missing = tmp_path / "csrc" / "cascade.cu"
    with pytest.raises(AotcError) as exc:
        fi_build._hash_files([str(present), str(missing)], roles, "cascade")
    diag = exc.value.diagnostics[0]
    assert diag.code == "AOTC-FI-013" and diag.spec == "cascade"
    assert str(missing) in diag.message and "data/csrc" in diag.fix and diag.details["path"] == str(missing)
