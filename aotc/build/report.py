"""`aotc report`: one self-contained HTML page (inline CSS, no script, no network) showing every kernel's
SMEM split by component against its arch's budget, rejected specs with their overshoot, what the cache
knows of each built kernel (registers, spills, MMA instructions), and a build timeline from the
manifests; plus the same SMEM bar as terminal text for `aotc show`. Reads the rules and the cache only.
"""

from __future__ import annotations

import datetime as _dt
import html
from dataclasses import dataclass, field
from pathlib import Path

# One colour per component position (the legend names them); the budget line is drawn on top.
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac", "#86bcb6", "#d4a6c8")
BAR_CHARS = "█▓▒░#=+*~:o%"  # terminal: one fill character per component, in PALETTE order


@dataclass
class KernelRow:
    name: str
    family: str
    arch: str
    ok: bool
    budget: int
    total: int
    components: dict[str, int]
    codes: list[str] = field(default_factory=list)  # diagnostics of a rejected spec
    built: dict | None = None  # registers, spills, mma, compile_seconds, built_at (from the manifest)

    @property
    def overshoot(self) -> int:
        return max(0, self.total - self.budget)


@dataclass
class TimelineItem:
    name: str
    arch: str
    start: float  # seconds since the epoch
    seconds: float


def collect(specs, archs, cache) -> tuple[list[KernelRow], list[TimelineItem]]:
    """A row per applicable (spec, arch) that has an SMEM model, as `aotc check --json` reports it, with
    the cache's manifest where the kernel is built; and the timeline of every built kernel shown."""
    from aotc.build.rules import check
    from aotc.keys import spec_key

    rows, timeline = [], []
    for spec in specs:
        for arch in archs:
            v = check(spec, arch)
            if not v.applicable or v.smem is None:
                continue
            row = KernelRow(spec.name, spec.family, arch.name, v.ok, arch.smem_optin_bytes, v.smem.total,
                            dict(v.smem.components), [d.code for d in v.diagnostics])
            manifest = cache.resolve_ref(spec_key(spec.family, spec.params, arch.name)) if v.ok else None
            if manifest:
                res = manifest.get("resources") or {}
                row.built = {"registers": res.get("registers"), "spills_bytes": res.get("spills_bytes", 0),
                             "mma": (manifest.get("sass") or {}).get("mma", {}),
                             "compile_seconds": manifest.get("compile_seconds", 0.0),
                             "built_at": manifest.get("built_at", ""), "key": manifest["key"]}
                end = _parse_time(manifest.get("built_at", ""))
                if end is not None:
                    secs = float(manifest.get("compile_seconds") or 0.0)
                    timeline.append(TimelineItem(spec.name, arch.name, end - secs, secs))
            rows.append(row)
    timeline.sort(key=lambda t: (t.start, t.name))
    return rows, timeline


def _parse_time(text: str) -> float | None:
    try:
        return _dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def terminal_bar(components: dict[str, int], total: int, budget: int, width: int = 60) -> list[str]:
    """The SMEM bar as text: components in order, a `|` at the budget, and a legend line per component."""
    scale = max(total, budget) / width
    cells: list[str] = []
    for i, (_, size) in enumerate(components.items()):
        cells += [BAR_CHARS[i % len(BAR_CHARS)]] * round(size / scale)
    cells = (cells + [" "] * width)[: max(width, len(cells))]
    mark = min(round(budget / scale), len(cells))
    bar = "".join(cells[:mark]) + "|" + "".join(cells[mark:])
    verdict = f"{budget - total:,} B free" if total <= budget else f"{total - budget:,} B OVER"
    lines = [f"[{bar}] {total:,} / {budget:,} B ({verdict})"]
    lines += [f"  {BAR_CHARS[i % len(BAR_CHARS)]} {name:<24} {size:>9,} B"
              for i, (name, size) in enumerate(components.items())]
    return lines


_CSS = """
body{font:14px system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px} h2{font-size:16px;margin-top:28px}
.kernel{position:relative;margin:3px 0;display:grid;grid-template-columns:360px 1fr 330px;align-items:center;gap:8px}
.label{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.track{position:relative;height:16px;background:#f3f3f3}
.seg{position:absolute;top:0;height:16px}
.budget{position:absolute;top:-3px;height:22px;width:2px;background:#000}
.rejected .label{color:#c00;font-weight:600}
.over{position:absolute;top:0;height:16px;background:repeating-linear-gradient(45deg,#c00 0 4px,#fff 4px 8px)}
.facts{font:12px ui-monospace,monospace;color:#444;white-space:nowrap}
.legend span{display:inline-block;margin-right:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
.tl{position:relative;height:14px;margin:2px 0;display:grid;grid-template-columns:360px 1fr;gap:8px}
.tl .run{position:absolute;top:0;height:14px;background:#4e79a7}
table{border-collapse:collapse} td,th{padding:2px 10px;text-align:right} td:first-child,th:first-child{text-align:left}
"""


def _legend(rows: list[KernelRow]) -> tuple[dict[str, str], str]:
    colors: dict[str, str] = {}
    for row in rows:
        for name in row.components:
            colors.setdefault(name, PALETTE[len(colors) % len(PALETTE)])
    items = "".join(f'<span><i style="background:{c}"></i>{html.escape(n)}</span>' for n, c in colors.items())
    return colors, f'<p class="legend">{items}</p>'


def _kernel_bar(row: KernelRow, colors: dict[str, str], scale: float) -> str:
    esc = html.escape
    segs, offset = [], 0
    for name, size in row.components.items():
        segs.append(f'<div class="seg" data-component="{esc(name)}" data-bytes="{size}" title="{esc(name)} '
                    f'{size:,} B" style="left:{offset / scale * 100:.3f}%;width:{size / scale * 100:.3f}%;'
                    f'background:{colors[name]}"></div>')
        offset += size
    if row.overshoot:
        segs.append(f'<div class="over" style="left:{row.budget / scale * 100:.3f}%;'
                    f'width:{row.overshoot / scale * 100:.3f}%"></div>')
    segs.append(f'<div class="budget" style="left:{row.budget / scale * 100:.3f}%" title="budget '
                f'{row.budget:,} B"></div>')
    if row.built:
        b = row.built
        mma = " ".join(f"{op}×{n}" for op, n in sorted(b["mma"].items())) or "no MMA"
        facts = f'{b["registers"]} regs, {b["spills_bytes"]} B spills, {mma}, {b["compile_seconds"]:.0f} s'
    elif row.ok:
        facts = "not built (aotc build)"
    else:
        facts = f"REJECTED +{row.overshoot:,} B {' '.join(row.codes)}"
    cls = "kernel" if row.ok else "kernel rejected"
    built = (f' data-registers="{row.built["registers"]}" data-spills="{row.built["spills_bytes"]}"'
             if row.built else "")
    return (f'<div class="{cls}" data-name="{esc(row.name)}" data-arch="{row.arch}" data-family="{row.family}" '
            f'data-total="{row.total}" data-budget="{row.budget}" data-ok="{str(row.ok).lower()}" '
            f'data-overshoot="{row.overshoot}"{built}>'
            f'<div class="label" title="{esc(row.name)}">{esc(row.name)} <small>{row.arch}</small></div>'
            f'<div class="track">{"".join(segs)}</div>'
            f'<div class="facts">{row.total:,} B · {esc(facts)}</div></div>')


def _timeline(items: list[TimelineItem]) -> str:
    if not items:
        return "<p>No built kernels in the cache for these archs: the timeline fills in after `aotc build`.</p>"
    t0 = min(t.start for t in items)
    span = max(t.start + t.seconds for t in items) - t0 or 1.0
    rows = [f'<div class="tl" data-name="{html.escape(t.name)}" data-arch="{t.arch}" data-seconds="{t.seconds}">'
            f'<div class="label">{html.escape(t.name)} <small>{t.arch}</small></div><div class="track">'
            f'<div class="run" title="{t.seconds:.1f} s" style="left:{(t.start - t0) / span * 100:.3f}%;'
            f'width:{max(t.seconds / span * 100, 0.2):.3f}%"></div></div></div>' for t in items]
    start = _dt.datetime.fromtimestamp(t0, _dt.timezone.utc).isoformat(timespec="seconds")
    return (f"<p>{len(items)} kernels built from {start} over {span:,.0f} s of wall time "
            f"(nvcc time per kernel; start = manifest built_at − compile_seconds).</p>" + "".join(rows))


def render_html(rows: list[KernelRow], timeline: list[TimelineItem], title: str = "aotc report") -> str:
    colors, legend = _legend(rows)
    n_rej = sum(not r.ok for r in rows)
    per_arch = "".join(
        f"<tr><td>{a}</td><td>{sum(r.arch == a and r.ok for r in rows)}</td>"
        f"<td>{sum(r.arch == a and not r.ok for r in rows)}</td><td>{sum(r.arch == a and bool(r.built) for r in rows)}"
        f"</td><td>{max((r.total for r in rows if r.arch == a and r.ok), default=0):,}</td></tr>"
        for a in sorted({r.arch for r in rows}))
    bars = ""
    for arch in sorted({r.arch for r in rows}):  # one scale per arch: its budget stays in one place
        mine = sorted((r for r in rows if r.arch == arch), key=lambda r: (-r.total, r.name))
        scale = max([r.total for r in mine] + [mine[0].budget]) * 1.02
        bars += f"<h3>{arch}: budget {mine[0].budget:,} B</h3>" + "".join(_kernel_bar(r, colors, scale) for r in mine)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{len(rows)} kernels, {n_rej} rejected. Each bar is one kernel's shared memory by component; the "
            f"black line is its arch's opt-in budget per block; hatched red is the overshoot.</p>"
            f"<table><tr><th>arch</th><th>fit</th><th>rejected</th><th>built</th><th>largest B</th></tr>{per_arch}"
            f"</table><h2>Shared memory</h2>{legend}<div id=\"bars\">{bars}</div>"
            f"<h2>Build timeline</h2><div id=\"timeline\">{_timeline(timeline)}</div></body></html>\n")


def write_report(specs, archs, cache, out_dir: Path) -> tuple[Path, list[KernelRow], list[TimelineItem]]:
    rows, timeline = collect(specs, archs, cache)
    out_dir.mkdir(parents=True, exist_ok=True)
    page = out_dir / "index.html"
    tmp = page.with_suffix(".tmp")
    tmp.write_text(render_html(rows, timeline, f"aotc report: {', '.join(a.name for a in archs)}"))
    tmp.replace(page)
    return page, rows, timeline
