"""`aotc report` opened in a real headless browser (Debian's chromium): the page renders (a screenshot
with the bars' colours in it), it has one bar per kernel that `aotc check --json` reports, and every
number read back from the DOM equals check's; and `aotc show` draws the same SMEM split in text."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from aotc.build.report import PALETTE
from aotc.cli import main
from tests.conftest import BUILT_SPEC
from tests.test_cli import OVER  # the over-budget FMHA spec the CLI tests reject

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def need_chromium():
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs it (apt-get install chromium)")
        pytest.skip("no chromium here (apt-get install chromium)")


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    profile.mkdir()
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


class Bars(HTMLParser):
    """Every `.kernel` element's data-* attributes and its segments, as the browser's DOM holds them."""

    def __init__(self):
        super().__init__()
        self.kernels: list[dict] = []
        self.timeline: list[dict] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if "kernel" in classes:
            self.kernels.append({**a, "segments": {}})
        elif "seg" in classes:
            self.kernels[-1]["segments"][a["data-component"]] = int(a["data-bytes"])
        elif "tl" in classes:
            self.timeline.append(a)


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit truecolour PNG, decoded with the stdlib."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and ctype in (2, 6), (depth, ctype)
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        line = raw[y * (stride + 1):(y + 1) * (stride + 1)]
        f, cur = line[0], bytearray(line[1:])
        for x in range(stride):
            left = cur[x - bpp] if x >= bpp else 0
            up, ul = prev[x], prev[x - bpp] if x >= bpp else 0
            if f == 1:
                cur[x] = (cur[x] + left) & 255
            elif f == 2:
                cur[x] = (cur[x] + up) & 255
            elif f == 3:
                cur[x] = (cur[x] + (left + up) // 2) & 255
            elif f == 4:
                p = left + up - ul
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - ul)
                cur[x] = (cur[x] + (left if pa <= pb and pa <= pc else up if pb <= pc else ul)) & 255
        rows.append(bytes(cur) if bpp == 3 else bytes(b for i, b in enumerate(cur) if i % 4 != 3))
        prev = cur
    return width, height, rows


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_report_renders_in_chromium_and_matches_check(capsys, tmp_path):
    need_chromium()
    over = tmp_path / "over.toml"
    over.write_text(OVER)
    specs = [str(ROOT / "tile_specs"), str(over)]
    archs = "sm120a,sm90a"
    code, out, _ = run(capsys, "check", "--json", "--arch", archs, *specs)
    verdicts = [v for v in json.loads(out)["verdicts"] if v["applicable"] and v["smem"] is not None]
    assert any(not v["ok"] for v in verdicts)  # the over-budget spec is in the picture
    code, out, _ = run(capsys, "report", "--arch", archs, "--out", str(tmp_path / "r"),
                       "--cache-dir", str(tmp_path / "empty"), *specs)
    assert code == 0, out
    page = tmp_path / "r" / "index.html"
    text = page.read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text  # self-contained

    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0 and "<body" in dom.stdout, dom.stderr[-2000:]
    bars = Bars()
    bars.feed(dom.stdout)
    assert len(bars.kernels) == len(verdicts)  # one bar per kernel
    shown = {(k["data-name"], k["data-arch"]): k for k in bars.kernels}
    for v in verdicts:
        k = shown[(v["spec"], v["arch"])]
        assert int(k["data-total"]) == v["smem"]["total"]
        assert int(k["data-budget"]) == v["budget"]
        assert k["data-ok"] == str(v["ok"]).lower()
        assert k["segments"] == v["smem"]["components"]
        if not v["ok"]:
            over_by = next(d["details"]["overshoot"] for d in v["diagnostics"] if d["code"] == "AOTC-SMEM-001")
            assert int(k["data-overshoot"]) == over_by > 0

    shot = tmp_path / "shot.png"
    result = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,1600", "--hide-scrollbars",
                      page.as_uri())
    assert shot.is_file(), result.stderr[-2000:]
    width, height, rows = png_pixels(shot.read_bytes())
    assert (width, height) == (1400, 1600)
    pixels = {row[i:i + 3] for row in rows[::4] for i in range(0, len(row), 12)}
    assert len(pixels) > 20  # not a blank page
    first = bytes.fromhex(PALETTE[0][1:])
    assert any(row[i:i + 3] == first for row in rows for i in range(0, len(row), 3))  # a bar was painted


@pytest.mark.compile
def test_report_and_show_on_a_real_build(built_cache, capsys, tmp_path):
    cache, _ = built_cache
    code, out, _ = run(capsys, "report", "--arch", "sm120a,sm90a", "--filter", "fmha_fwd_m64n64",
                       "--cache-dir", str(cache.root), "--out", str(tmp_path / "r"), "--json")
    assert code == 0 and json.loads(out)["built"] == 2 and json.loads(out)["timeline"] == 2
    bars = Bars()
    bars.feed((tmp_path / "r" / "index.html").read_text())
    built = {(k["data-name"], k["data-arch"]): k for k in bars.kernels if "data-registers" in k}
    for m in (cache.get_manifest(r["key"]) for r in cache.refs()):
        assert int(built[(m["name"], m["arch"])]["data-registers"]) == m["resources"]["registers"]
    assert {(t["data-name"], t["data-arch"]) for t in bars.timeline} == set(built)
    # `aotc show` prints the split of `aotc check` as a text bar, not the JSON manifest
    code, out, _ = run(capsys, "check", "--json", "--arch", "sm120a", "--filter", BUILT_SPEC)
    (v,) = [v for v in json.loads(out)["verdicts"] if v["spec"] == BUILT_SPEC]
    code, out, _ = run(capsys, "show", BUILT_SPEC, "--cache-dir", str(cache.root))
    assert code == 0 and not out.lstrip().startswith("{")
    section = out.split(", sm120a)")[1]
    assert f"{v['smem']['total']:,} / 101,376 B" in section
    for name, size in v["smem"]["components"].items():
        assert any(name in line and f"{size:,} B" in line for line in section.splitlines())
