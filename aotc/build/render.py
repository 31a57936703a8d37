"""Render: KernelSpec x Arch -> Source (the text of one CUDA translation unit). Jinja2 with
StrictUndefined and deterministic output; the context comes only from the family's typed params.
Build side only: the runtime never imports this module."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import jinja2

from aotc.arch import Arch
from aotc.build.spec import EXPANDED_NAME_PATTERN, KernelSpec
from aotc.diagnostics import AotcError, Diagnostic
from aotc.families import get_family
from aotc.keys import sha256_hex
from aotc.resources import templates_dir


@dataclass(frozen=True)
class Source:
    text: str
    template: str  # template path under templates/
    template_sha256: str  # digest of the template file itself (the rendered text already covers it)


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def _context(spec: KernelSpec, arch: Arch) -> dict:
    family = get_family(spec.family)
    ctx = dict(family.render_context(spec.params, arch))
    ctx.setdefault("smem_budget", arch.smem_optin_bytes)
    ctx.setdefault("arch_sm", arch.sm)
    return ctx


def _render(template_name: str, ctx: dict) -> Source:
    env = environment()
    template = env.get_template(template_name)
    text = template.render(**ctx)
    raw = (templates_dir() / template_name).read_bytes()
    return Source(text, template_name, sha256_hex(raw))


def render(spec: KernelSpec, arch: Arch) -> Source:
    """The kernel translation unit (device kernel + host helper, see docs/CONTRACTS.md)."""
    # The one spec string written into the source: a KernelSpec made in code (not by load_specs)
    # must pass the same check, so a newline can never turn the header comment into code.
    if not EXPANDED_NAME_PATTERN.fullmatch(spec.name):
        raise AotcError(Diagnostic("AOTC-SPEC-002", f"kernel name {spec.name[:80]!r} has characters outside "
                                   "[A-Za-z0-9_.-] (and /,= of the sweep suffix)", spec=spec.name[:80],
                                   file=spec.file, fix='use e.g. name = "moe_w4a4"'))
    header = f"// aotc: {spec.name} ({spec.family}) for {arch.nvcc_name}\n"
    src = _render(get_family(spec.family).template, _context(spec, arch))
    return Source(header + src.text, src.template, src.template_sha256)


def render_probe(spec: KernelSpec, arch: Arch) -> Source:
    """The host-only sizeof probe of the same kernel type (SMEM ground truth)."""
    return _render(get_family(spec.family).probe_template, _context(spec, arch))
