"""Rendering: every applicable catalog spec renders, deterministically, with the SMEM budget
asserted in the source, and a template that uses an undefined value fails loudly."""

import jinja2
import pytest

from aotc.arch import ARCHES
from aotc.build.render import environment, render, render_probe
from aotc.build.rules import check
from aotc.build.spec import load_specs


def applicable():
    for spec in load_specs().specs:
        for arch in ARCHES.values():
            if check(spec, arch).ok:
                yield spec, arch


def test_every_catalog_kernel_renders_deterministically_with_budget_assert():
    pairs = list(applicable())
    assert len(pairs) > 20
    for spec, arch in pairs:
        a, b = render(spec, arch), render(spec, arch)
        assert a == b
        assert "aotc_kernel" in a.text and "AOTC_HOST_HELPER" in a.text
        assert "static_assert" in a.text and str(arch.smem_optin_bytes) in a.text, (spec.name, arch.name)
        assert render_probe(spec, arch).text == render_probe(spec, arch).text


def test_different_arch_or_params_give_different_sources():
    spec, arch = next(applicable())
    other = next(a for a in ARCHES.values() if a.smem_optin_bytes != arch.smem_optin_bytes and check(spec, a).ok)
    assert render(spec, arch).text != render(spec, other).text


def test_strict_undefined():
    with pytest.raises(jinja2.UndefinedError):
        environment().from_string("{{ tile_m }}").render()
