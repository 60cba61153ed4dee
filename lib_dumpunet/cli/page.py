"""`index.html`: one page showing each generated image beside its maps, by kind, block and step.

Per image: the picture (and, for difference-map jobs, the picture without the per-block prompts), its prompt and
settings, then one tab per kind of map (word heat maps, U-Net features, K, Q*K, V*Q*K, self-attention,
differences). A tab is a table: a row per block or attention module, a column per step, each cell the averaged map
where one was made (else the full grid), linked to the full-size PNG; the word heat maps' tab instead shows its
pictures side by side: one per word, the strip of all words, the per-step strips. Step buttons narrow a table to
one step and show its maps large. The page is static — one HTML file beside the PNGs, no network, a few lines of
script for the tabs.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field

from lib_dumpunet.cli.files import Saved
from lib_dumpunet.render import KIND_NAMES

__all__ = ["ImageEntry", "write_page"]

_KIND_ORDER = ("heat", "features", "qk", "vqk", "k", "self", "diff", "prompt")
_TAB_NAMES = {**KIND_NAMES, "heat": "Word heat maps", "prompt": "Prompt tensor"}
_ABOUT = {
    "features": "What each block outputs (rows) at each sampler step (columns), one tile per channel"
    " — or their average, where one was asked for. The views latent (what the U-Net is given), x0 (the clean"
    " picture it predicts, after guidance) and cfg (how far cond and uncond predictions differ) come first and last.",
    "qk": "Where each token of the prompt is looked at: the cross-attention probability of every position for"
    " each token (columns), per head or averaged over heads.",
    "vqk": "What cross-attention adds: its output before the output projection, one tile per channel.",
    "k": "The keys cross-attention computes from the prompt: one d × tokens tile per head.",
    "self": "Where the marked query points look in self-attention, per head (rows) and point (columns).",
    "diff": "Features with the per-block prompts minus features without them.",
    "prompt": "What the U-Net's cross-attention reads: one row per context column (tokens labelled), one column per"
    " channel of the text encoder, on one blue-white-red scale for the whole job.",
    "heat": "Where each word went: its tokens' cross-attention over the chosen layers and steps, summed, stretched"
    " to [0, 1] and drawn over the image; then all words side by side, and a small map per step where asked.",
}


@dataclass
class ImageEntry:
    """One generated image as the page shows it."""

    file: str
    title: str
    facts: list[tuple[str, str]]
    maps: list[Saved] = field(default_factory=list)
    baseline: str | None = None  # the image without per-block prompts
    notes: dict[str, str] = field(default_factory=dict)  # per block: what it holds and its output shape


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


_THUMB_HEIGHT, _THUMB_MAX_WIDTH = 72, 300
_LARGE_MAX = (1100, 720)


def _sizes(width: int, height: int) -> tuple[int, int]:
    """Display widths of a map: in the all-steps table (about 72 px high), and alone (an integer zoom, so every
    value stays a crisp square)."""
    thumb = min(_THUMB_MAX_WIDTH, round(width * _THUMB_HEIGHT / height))
    zoom = max(1, min(_LARGE_MAX[0] // width, _LARGE_MAX[1] // height))
    return thumb, width * zoom if width * zoom <= _LARGE_MAX[0] else _LARGE_MAX[0]


def _visible_width(s: Saved) -> int | None:
    """Natural width of the token columns before the padding of a Q*K map (None: show it whole)."""
    width = s.map.image.size[0]
    if s.columns is None or (width + 1) % s.columns[1]:
        return None
    shown, total = s.columns
    return shown * (width + 1) // total - 1 if shown < total else None


def _img(s: Saved) -> str:
    width, height = s.map.image.size
    visible = _visible_width(s)
    if visible is None:
        thumb, large = _sizes(width, height)
        style = f"--thumb:{thumb}px;--large:{large}px"
        return f'<img loading="lazy" src="{_e(s.file)}" alt="{_e(s.label)}" style="{style}">'
    # only the prompt's own columns are shown (the padding scrolls into view); the link opens the whole map
    thumb_scale = _THUMB_HEIGHT / height
    zoom = max(1, min(4, _LARGE_MAX[0] // visible, _LARGE_MAX[1] // height))
    crop = f"--cthumb:{round(visible * thumb_scale)}px;--clarge:{visible * zoom}px"
    style = f"--thumb:{round(width * thumb_scale)}px;--large:{width * zoom}px"
    return (
        f'<span class="crop" style="{crop}"><img loading="lazy" src="{_e(s.file)}" alt="{_e(s.label)}" '
        f'style="{style}"></span>'
    )


def _cell(items: list[Saved]) -> str:
    """The averaged map (or the grid), linked to the grid; in the one-step view both are shown."""
    averaged = [s for s in items if s.map.averaged]
    grids = [s for s in items if not s.map.averaged]
    shown = (averaged or grids)[0]
    target = (grids or averaged)[0]
    extra = "".join(f'<a class="also" href="{_e(s.file)}">{_img(s)}</a>' for s in grids if s is not shown)
    return f'<a href="{_e(target.file)}" title="{_e(target.label)}">{_img(shown)}</a>{extra}'


# Row notes of the latent views (blocks get theirs from the model's layout).
_VIEW_NOTES = {
    "latent": "U-Net input latent → RGB",
    "x0": "predicted x0 → RGB",
    "cfg": "|cond − uncond| per latent pixel",
}


def _row_label(place: str, sub: int, branch: str, note: str | None) -> str:
    extra = [f"AND {sub + 1}"] if sub else []
    extra += [branch] if branch != "cond" else []
    label = _e(place) + (f' <span class="muted">{_e(", ".join(extra))}</span>' if extra else "")
    return label + (f"<small>{_e(note)}</small>" if note else "")


def _tab(kind: str, maps: list[Saved], tab_id: str, notes: dict[str, str]) -> str:
    steps = sorted({(s.map.key.pass_index, s.map.key.step) for s in maps})
    rows: dict[tuple, dict[tuple[int, int], list[Saved]]] = {}
    for s in maps:  # maps arrive in gallery order, so rows come out in U-Net order
        k = s.map.key
        rows.setdefault((k.place, k.sub, k.branch), {}).setdefault((k.pass_index, k.step), []).append(s)
    name = lambda p, st: f"{'hires ' if p else ''}{st}"  # noqa: E731
    chips = "".join(f'<button data-step="{p}-{st}">step {name(p, st)}</button>' for p, st in steps)
    head = "".join(f'<th data-step="{p}-{st}">step {name(p, st)}</th>' for p, st in steps)
    body = []
    for (place, sub, branch), cells in rows.items():
        tds = "".join(
            f'<td data-step="{p}-{st}">{_cell(cells[(p, st)]) if (p, st) in cells else ""}</td>' for p, st in steps
        )
        note = notes.get(place, _VIEW_NOTES.get(place)) if kind in ("features", "diff") else None
        body.append(f'<tr><th class="place">{_row_label(place, sub, branch, note)}</th>{tds}</tr>')
    # wide maps (token columns) are unreadable side by side: such a tab opens on its last step
    wide = max(s.map.image.size[0] / s.map.image.size[1] for s in maps) > 3
    start = f"{steps[-1][0]}-{steps[-1][1]}" if wide and len(steps) > 1 else "all"
    cropped = any(_visible_width(s) is not None for s in maps)
    hint = '<span class="muted hint">padding columns scroll into view; click a map for all of it</span>'
    return (
        f'<section class="tab" id="tab-{tab_id}" data-kind="{_e(kind)}" data-start="{start}">'
        f'<p class="about-tab">{_e(_ABOUT.get(kind, ""))}</p>'
        f'<div class="chips"><button data-step="all">all steps</button>{chips}{hint if cropped else ""}</div>'
        f'<div class="scroll"><table><thead><tr><th></th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
        "</div></section>"
    )


def _heat_tab(maps: list[Saved], tab_id: str) -> str:
    """Word pictures as figures in gallery order (words, the strip, per-step strips), each linked to its PNG."""
    figures = []
    for s in maps:
        width, height = s.map.image.size
        wide = width > 1.5 * height
        caption = s.label.removeprefix("heat maps: ").removeprefix("heat map: ")
        figures.append(
            f'<figure class="{"wide" if wide else "word"}"><a href="{_e(s.file)}" title="{_e(s.label)}">'
            f'<img loading="lazy" src="{_e(s.file)}" alt="{_e(s.label)}" style="--natural:{width}px"></a>'
            f"<figcaption>{_e(caption)}</figcaption></figure>"
        )
    return (
        f'<section class="tab" id="tab-{tab_id}" data-kind="heat"><p class="about-tab">{_e(_ABOUT["heat"])}</p>'
        f'<div class="heat">{"".join(figures)}</div></section>'
    )


def _image_section(n: int, entry: ImageEntry) -> str:
    by_kind: dict[str, list[Saved]] = {}
    for s in entry.maps:
        by_kind.setdefault(s.map.key.kind, []).append(s)
    kinds = sorted(by_kind, key=lambda k: _KIND_ORDER.index(k) if k in _KIND_ORDER else len(_KIND_ORDER))
    tabs = "".join(
        f'<button class="{"on" if i == 0 else ""}" data-tab="i{n}-{k}">{_e(_TAB_NAMES.get(k, k))} '
        f'<span class="count">{len(by_kind[k])}</span></button>'
        for i, k in enumerate(kinds)
    )
    panels = "".join(
        _heat_tab(by_kind[k], f"i{n}-{k}") if k == "heat" else _tab(k, by_kind[k], f"i{n}-{k}", entry.notes)
        for k in kinds
    )
    facts = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in entry.facts)
    pictures = f'<figure><a href="{_e(entry.file)}"><img src="{_e(entry.file)}" alt="generated image"></a>'
    pictures += "<figcaption>generated</figcaption></figure>"
    if entry.baseline:
        pictures += (
            f'<figure><a href="{_e(entry.baseline)}"><img src="{_e(entry.baseline)}" alt="without per-block prompts">'
            "</a><figcaption>without per-block prompts</figcaption></figure>"
        )
    maps = f'<nav class="tabs">{tabs}</nav>{panels}' if kinds else '<p class="muted">No maps for this image.</p>'
    return (
        f'<article class="image"><div class="hero"><div class="pictures">{pictures}</div>'
        f'<div class="about"><h2>{_e(entry.title)}</h2><dl>{facts}</dl></div></div>{maps}</article>'
    )


_STYLE = """
:root { --bg:#f6f5f2; --card:#fff; --ink:#1f2328; --muted:#6b7280; --line:#e5e2dc; --accent:#3b5bdb; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink); font:15px/1.45 system-ui, -apple-system, "Segoe UI",
       Roboto, sans-serif; }
header { padding:18px 28px; background:#1f2328; color:#f6f5f2; display:flex; align-items:baseline; gap:16px;
         flex-wrap:wrap; }
header h1 { margin:0; font-size:20px; letter-spacing:.3px; }
header code { color:#c9d1d9; font-size:13px; }
main { padding:20px 28px 40px; max-width:1500px; margin:0 auto; }
.image { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:20px; margin-bottom:24px;
         box-shadow:0 1px 2px rgba(0,0,0,.04); }
.hero { display:flex; gap:24px; align-items:flex-start; flex-wrap:wrap; margin-bottom:16px; }
.pictures { display:flex; gap:14px; }
figure { margin:0; text-align:center; }
figure img { width:224px; height:auto; border-radius:6px; border:1px solid var(--line); image-rendering:pixelated;
             display:block; }
figcaption { color:var(--muted); font-size:12px; margin-top:4px; }
.about h2 { margin:2px 0 10px; font-size:17px; font-weight:600; max-width:60ch; }
dl { display:grid; grid-template-columns:max-content 1fr; gap:3px 14px; margin:0; font-size:13.5px; }
dt { color:var(--muted); } dd { margin:0; font-family:ui-monospace, SFMono-Regular, Menlo, monospace; font-size:13px; }
.tabs { display:flex; gap:6px; border-bottom:1px solid var(--line); margin-bottom:10px; flex-wrap:wrap; }
.tabs button { border:0; background:none; padding:8px 12px; font:inherit; color:var(--muted); cursor:pointer;
               border-bottom:2px solid transparent; margin-bottom:-1px; }
.tabs button.on { color:var(--ink); border-bottom-color:var(--accent); font-weight:600; }
.count { background:#eef0f4; color:var(--muted); border-radius:9px; padding:0 7px; font-size:12px; font-weight:400; }
.tab { display:none; } .tab.on { display:block; }
.chips { display:flex; gap:6px; flex-wrap:wrap; margin:6px 0 10px; }
.chips button { border:1px solid var(--line); background:#fff; border-radius:14px; padding:3px 11px; font:inherit;
                font-size:13px; cursor:pointer; color:var(--ink); }
.chips button.on { background:var(--accent); border-color:var(--accent); color:#fff; }
.scroll { overflow-x:auto; }
.about-tab { margin:2px 0 6px; color:var(--muted); font-size:13.5px; }
.hint { font-size:12.5px; align-self:center; margin-left:8px; }
table { border-collapse:separate; border-spacing:6px 6px; }
thead th { font-size:12.5px; color:var(--muted); font-weight:500; text-align:left; }
th.place { font:600 13px ui-monospace, SFMono-Regular, Menlo, monospace; text-align:right; padding-right:6px;
           white-space:nowrap; vertical-align:middle; }
td { vertical-align:middle; }
td img { display:block; width:var(--thumb); height:auto; image-rendering:pixelated; border-radius:3px;
         background:#000; }
td a.also { display:none; }
table.single td img { width:var(--large); max-width:80vw; }
table.single td { display:flex; flex-direction:column; gap:8px; align-items:flex-start; padding-bottom:10px; }
[hidden] { display:none !important; }
table.single td a.also { display:block; }
.crop { display:block; overflow-x:auto; overflow-y:hidden; width:var(--cthumb); }
table.single .crop { width:var(--clarge); max-width:80vw; }
.crop img, table.single .crop img { max-width:none; }
th.place small { display:block; font:400 11px system-ui, sans-serif; color:var(--muted); }
.muted { color:var(--muted); font-weight:400; }
a.alt { font-size:11px; color:var(--accent); }
.heat { display:flex; gap:14px; flex-wrap:wrap; align-items:flex-start; }
.heat figure.word img { width:224px; }
.heat figure.wide img { width:calc(var(--natural) * 2); max-width:min(100%, 1100px); border-radius:4px; }
.heat figure.wide { flex-basis:100%; text-align:left; }
footer { color:var(--muted); font-size:12.5px; text-align:center; padding:10px 0 30px; }
"""

_SCRIPT = """
document.querySelectorAll('.image').forEach(function (card) {
  card.querySelectorAll('.tabs button').forEach(function (b) {
    b.addEventListener('click', function () {
      card.querySelectorAll('.tabs button').forEach(function (x) { x.classList.toggle('on', x === b); });
      card.querySelectorAll('.tab').forEach(function (t) {
        t.classList.toggle('on', t.id === 'tab-' + b.dataset.tab);
      });
    });
  });
  var first = card.querySelector('.tab'); if (first) first.classList.add('on');
  var linked = card.querySelector('.tabs button[data-tab="' + location.hash.slice(1) + '"]');
  if (linked) linked.click();  // index.html#i0-qk opens image 0's Q*K tab
});
document.querySelectorAll('.tab').forEach(function (tab) {
  var table = tab.querySelector('table');
  if (!table) return;  // the word heat maps' tab has figures, no steps table
  var show = function (step) {
    tab.querySelectorAll('.chips button').forEach(function (x) { x.classList.toggle('on', x.dataset.step === step); });
    table.classList.toggle('single', step !== 'all');
    table.querySelectorAll('[data-step]').forEach(function (c) {
      c.hidden = step !== 'all' && c.dataset.step !== step;
    });
  };
  show(tab.dataset.start);
  tab.querySelectorAll('.chips button').forEach(function (b) {
    b.addEventListener('click', function () { show(b.dataset.step); });
  });
});
"""


def write_page(entries: Sequence[ImageEntry], *, title: str, command: str, notes: Sequence[str] = ()) -> str:
    """The page's HTML."""
    sections = "".join(_image_section(n, e) for n, e in enumerate(entries))
    notes_html = "".join(f'<p class="muted">{_e(n)}</p>' for n in notes)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>"
        f"<header><h1>Dump U-Net</h1><code>{_e(command)}</code></header>"
        f"<main>{notes_html}{sections}</main>"
        "<footer>Click a map for the full-size PNG; every PNG carries its settings (PNG Info).</footer>"
        f"<script>{_SCRIPT}</script></body></html>"
    )
