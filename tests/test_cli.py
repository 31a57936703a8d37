"""The command line as users and scripts see it: exit codes, --json, messages with numbers."""

import json
import os
import subprocess
import sys

import pytest

from aotc.cli import main
from aotc.keys import action_key
from tests.conftest import BUILT_SPEC

OVER = """
[[kernel]]
name = "too_big"
family = "fmha_fwd"
block_m = 128
block_n = 128
head_dim = 128
warps = 8
kv_stages = 2
dtype = "bf16"
"""


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_catalog_passes_and_json_is_parseable(capsys):
    code, out, _ = run(capsys, "check", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["ok"] and data["verdicts"]
    assert all(v["smem"]["total"] <= v["budget"] for v in data["verdicts"] if v["ok"])


def test_check_rejects_overbudget_spec_with_numbers(capsys, tmp_path):
    f = tmp_path / "big.toml"
    f.write_text(OVER)
    code, out, _ = run(capsys, "check", str(f), "--arch", "sm120a,sm90a")
    assert code == 1
    assert "AOTC-SMEM-001" in out and "exceeds the sm120a budget of 101,376 B" in out
    assert "FAIL  too_big" in out and "ok    too_big" in out  # fits the H100, not SM120
    code, out, _ = run(capsys, "check", str(f), "--json")
    (v,) = json.loads(out)["verdicts"]
    d = v["diagnostics"][0]
    assert d["details"]["overshoot"] == d["details"]["total"] - 101_376 > 0


def test_bad_arch_and_bad_spec_file_exit_codes(capsys, tmp_path):
    code, _, err = run(capsys, "check", "--arch", "sm75")
    assert code == 2 and "unknown arch" in err
    f = tmp_path / "bad.toml"
    f.write_text("[[kernel]]\nname = 'x'\nfamily = 'nope'\n")
    code, out, _ = run(capsys, "check", str(f))
    assert code == 1 and "AOTC-SPEC-003" in out


def test_families_teaches_parameters(capsys):
    code, out, _ = run(capsys, "families", "fmha_fwd")
    assert code == 0 and "head_dim" in out and "required" in out


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "aotc.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for verb in ("check", "build", "ls", "show", "verify", "gc", "explain", "doctor", "wheel", "families"):
        assert verb in out
    assert "examples:" in out


@pytest.mark.compile
def test_cache_views_on_a_real_build(built_cache, capsys):
    cache, summary = built_cache
    root = str(cache.root)
    code, out, _ = run(capsys, "ls", "--cache-dir", root, "--json")
    assert code == 0 and {m["arch"] for m in json.loads(out)["entries"]} == {"sm90a", "sm120a"}
    code, out, _ = run(capsys, "show", "--cache-dir", root, summary.results[0].key[:10])
    assert code == 0 and summary.results[0].key in out
    code, out, _ = run(capsys, "explain", "--cache-dir", root, BUILT_SPEC, "--arch", "sm90a", "--json")
    data = json.loads(out)
    assert code == 0 and data["cached"] and data["inputs"]["headers"]
    assert data["action_key"] == next(r.key for r in summary.results if r.arch.name == "sm90a")
    assert action_key(data["inputs"]) == data["action_key"]  # the inputs shown, header map included, are what it hashes
    code, out, _ = run(capsys, "verify", "--cache-dir", root, "--json")
    assert code == 0
    code, _, err = run(capsys, "show", "--cache-dir", root, "f" * 64)
    assert code == 2 and "AOTC-CLI-001" in err
    # gc: the catalog reaches both entries; entries outside the given specs go only with --unreachable
    code, out, _ = run(capsys, "gc", "--cache-dir", root, "--dry-run", "--json")
    assert code == 0 and json.loads(out)["manifests_removed"] == []
    code, out, _ = run(capsys, "gc", "--cache-dir", root, "--dry-run", "--json", "--filter", "fmha_decode")
    assert code == 0 and json.loads(out)["manifests_removed"] == []
    # (entries younger than gc's grace may belong to a build still writing its refs: age them first)
    paths = [cache.manifest_path(r.key) for r in summary.results]
    times = [(p.stat().st_atime, p.stat().st_mtime) for p in paths]
    for p in paths:
        os.utime(p, (1, 1))
    try:
        code, out, _ = run(capsys, "gc", "--cache-dir", root, "--dry-run", "--json", "--unreachable",
                           "--filter", "fmha_decode")
    finally:
        for p, t in zip(paths, times):
            os.utime(p, t)
    assert sorted(json.loads(out)["manifests_removed"]) == sorted(r.key for r in summary.results)
    assert cache.get_manifest(summary.results[0].key) is not None  # dry run deleted nothing
