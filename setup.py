"""Everything is declared in pyproject.toml; this only ships aotc/flashinfer/aotc-flashinfer.pth at the
top of site-packages too (where Python runs .pth files at start-up: docs/serving.md). An editable
install (pip install -e) does not carry it; use `python -m aotc.flashinfer` there."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = Path("aotc") / "flashinfer" / "aotc-flashinfer.pth"


class BuildPyWithPth(build_py):
    def run(self):
        super().run()
        self.copy_file(str(PTH), str(Path(self.build_lib) / PTH.name))

    def get_outputs(self, include_bytecode=True):
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / PTH.name)]


setup(cmdclass={"build_py": BuildPyWithPth})
