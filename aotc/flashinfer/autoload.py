"""Start-up activation of the FlashInfer hook for programs aotc cannot wrap (vLLM, SGLang workers):
the `aotc-flashinfer.pth` file that pip installs with aotc calls arm() when AOTC_FLASHINFER=1, and the
hook installs itself the moment the program imports flashinfer. Without the variable nothing of aotc
is imported; a process that never imports flashinfer never pays for it. Runtime side only.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

PTH_FILE = "aotc-flashinfer.pth"


class _InstallAfterFlashInferImport(importlib.abc.MetaPathFinder):
    """Finds `flashinfer` through the other finders, and installs the hook once its module has run."""

    def find_spec(self, name, path=None, target=None):
        if name != "flashinfer":
            return None
        sys.meta_path.remove(self)  # one shot: the nested find_spec must not come back here
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            _activate()

        spec.loader.exec_module = exec_module
        return spec


def _activate() -> None:
    from aotc.flashinfer.hook import activate_from_env

    try:
        activate_from_env()
    except Exception as exc:
        from aotc.diagnostics import AotcError  # on this path only: install() itself does not import it

        if not isinstance(exc, AotcError):
            raise
        # the program still runs, with FlashInfer's own JIT; say why once
        for d in exc.diagnostics:
            print(f"aotc: FlashInfer hook not installed: {d.format()}", file=sys.stderr)


def arm() -> None:
    """Install the hook now if flashinfer is already imported, else when it is."""
    if "flashinfer" in sys.modules:
        _activate()
    elif not any(isinstance(f, _InstallAfterFlashInferImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _InstallAfterFlashInferImport())
