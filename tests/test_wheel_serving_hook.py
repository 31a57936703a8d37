"""The start-up hook for serving engines (docs/serving.md): aotc's wheel ships `aotc-flashinfer.pth`;
in an environment where that wheel is installed, a console-script program that imports FlashInfer gets
the aotc hook when AOTC_FLASHINFER=1, in its spawned worker processes too, and neither aotc nor FlashInfer is imported early without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = '''
import json, multiprocessing, sys

def worker(queue):
    import flashinfer
    import aotc.flashinfer
    queue.put(aotc.flashinfer.installed())

def main():
    at_start = {m: m in sys.modules for m in ("aotc", "flashinfer")}
    import flashinfer  # what vLLM / SGLang do somewhere in their start-up
    import aotc
    import aotc.flashinfer
    # a freshly spawned worker process, as vLLM's engine core and SGLang's schedulers are
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=worker, args=(queue,))
    child.start()
    child.join(timeout=600)
    in_worker = queue.get(timeout=5) if child.exitcode == 0 else f"worker exit {child.exitcode}"
    print(json.dumps({"at_start": at_start, "installed": aotc.flashinfer.installed(), "aotc": aotc.__file__,
                      "installed_in_spawned_worker": in_worker}))
    return 0
'''


@pytest.fixture(scope="module")
def serving_env(tmp_path_factory) -> Path:
    """A venv holding aotc's built wheel (no deps) that sees this environment's FlashInfer and torch,
    and a console script `serve-probe` as pip would write it."""
    pytest.importorskip("flashinfer")
    tmp = tmp_path_factory.mktemp("serving")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp / "dist"), str(ROOT)], capture_output=True, text=True, check=False)
    assert build.returncode == 0, build.stderr[-3000:]
    (whl,) = (tmp / "dist").glob("aotc-*.whl")
    with zipfile.ZipFile(whl) as zf:
        names = zf.namelist()
    assert "aotc-flashinfer.pth" in names and "aotc/py.typed" in names  # shipped at site-packages' top
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", where], capture_output=True, text=True,
                               check=True).stdout.strip())
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(whl)],
                   check=True)
    # this environment's packages (FlashInfer, torch, cuda-python) after the venv's own; sorts first
    (site / "0-parent-env.pth").write_text(f"import site; site.addsitedir({sysconfig.get_path('purelib')!r})\n")
    (site / "serve_probe.py").write_text(PROGRAM)
    script = venv / "bin" / "serve-probe"
    script.write_text(f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom serve_probe import main\n"
                      "if __name__ == '__main__':\n    sys.exit(main())\n")  # as pip writes console scripts
    script.chmod(0o755)
    return venv


def probe(venv: Path, tmp_path: Path, **env) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AOTC_") and k != "PYTHONPATH"}
    out = subprocess.run([str(venv / "bin" / "serve-probe")], capture_output=True, text=True, cwd=tmp_path,
                         env={**base, "AOTC_CACHE_DIR": str(tmp_path / "cache"), **env}, timeout=900, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_pth_hook_installs_on_flashinfer_import_only_when_asked(serving_env, tmp_path):
    on = probe(serving_env, tmp_path, AOTC_FLASHINFER="1")
    assert on["installed"] is True and on["installed_in_spawned_worker"] is True
    assert on["at_start"] == {"aotc": True, "flashinfer": False}  # armed at start-up, FlashInfer not imported
    assert on["aotc"].startswith(str(serving_env))  # the installed wheel's aotc, not this checkout
    off = probe(serving_env, tmp_path)
    assert off["installed"] is False and off["installed_in_spawned_worker"] is False
    assert off["at_start"] == {"aotc": False, "flashinfer": False}  # nothing of aotc without the variable
    assert probe(serving_env, tmp_path, AOTC_FLASHINFER="0")["installed"] is False
