"""Geometry of the dashboard's plots read from the page (no tests here): each visible plot's title, toolbar
(modebar), plotting area, axis titles, named labels (text points and annotations), tick labels and colour
bar, as boxes {left, right, top, bottom}; and the checks the views must pass at every screen width."""
from __future__ import annotations

PROBE = """(id) => {
  const div = document.getElementById(id);
  const boxes = (sel) => Array.from(div.querySelectorAll(sel))
    .filter(e => e.textContent === undefined || e.tagName === 'rect' || e.tagName === 'path' || e.textContent.trim() !== '' || e.classList.contains('modebar') || e.classList.contains('nsewdrag'))
    .map(e => [e, e.getBoundingClientRect()]).filter(([, b]) => b.width > 0 && b.height > 0)
    .map(([e, b]) => ({left: b.left, right: b.right, top: b.top, bottom: b.bottom, text: (e.textContent || '').slice(0, 40)}));
  const ticks = {};
  for (const axis of div.querySelectorAll('.xaxislayer-above, .yaxislayer-above')) {
    const name = Array.from(axis.classList).join('.') + ':' + (axis.parentElement.getAttribute('class') || '');
    ticks[name + Object.keys(ticks).length] = Array.from(axis.querySelectorAll('text')).filter(t => t.textContent.trim())
      .map(t => t.getBoundingClientRect()).filter(b => b.width > 0).map(b => ({left: b.left, right: b.right, top: b.top, bottom: b.bottom}));
  }
  return {
    id, svg: boxes('.main-svg')[0] || null, title: boxes('.gtitle')[0] || null, modebar: boxes('.modebar')[0] || null,
    areas: boxes('.draglayer .nsewdrag'), scene: boxes('.gl-container, .svg-container .gl-canvas').length > 0 || !!div.querySelector('.scene'),
    axisTitles: boxes('.g-xtitle text, .g-ytitle text, .g-x2title text, .g-y2title text, .g-ztitle text, .colorbar .cbtitle text'),
    labels: boxes('.textpoint text').concat(boxes('.annotation-text-g')), ticks,
    colorbars: boxes('.colorbar .cbbg'),
  };
}"""


def intersect(a: dict, b: dict, slack: float = 0.5) -> bool:
    return (a["left"] + slack < b["right"] and b["left"] + slack < a["right"]
            and a["top"] + slack < b["bottom"] and b["top"] + slack < a["bottom"])


def inside(box: dict, frame: dict, slack: float = 0.5) -> bool:
    return (box["left"] >= frame["left"] - slack and box["right"] <= frame["right"] + slack
            and box["top"] >= frame["top"] - slack and box["bottom"] <= frame["bottom"] + slack)


def problems(p: dict, min_area: float = 250) -> list[str]:
    """What is wrong with one plot's geometry (empty: nothing)."""
    out = []
    svg = p["svg"]
    if svg is None:
        return [f"{p['id']}: not drawn"]
    if p["title"] and p["modebar"] and intersect(p["title"], p["modebar"]):
        out.append(f"{p['id']}: the toolbar covers the title")
    if p["title"] and not inside(p["title"], svg):
        out.append(f"{p['id']}: the title is cut ({p['title']} outside {svg})")
    if p["areas"]:
        height = max(a["bottom"] - a["top"] for a in p["areas"])
        if height < min_area:
            out.append(f"{p['id']}: plotting area {height:.0f} px high (< {min_area})")
    for bar in p["colorbars"]:  # a colour bar beside the plotting area sits next to it, not far to the right
        beside = [a for a in p["areas"] if bar["left"] >= a["right"] - 0.5]
        if beside and bar["left"] - max(a["right"] for a in beside) > 60:
            out.append(f"{p['id']}: colour bar {bar['left'] - max(a['right'] for a in beside):.0f} px from the plot")
    for t in p["axisTitles"]:
        if not inside(t, svg):
            out.append(f"{p['id']}: axis title {t['text']!r} outside the figure")
    for i, a in enumerate(p["labels"]):
        if not inside(a, svg):
            out.append(f"{p['id']}: label {a['text']!r} outside the figure")
        for b in p["labels"][i + 1:]:
            if intersect(a, b, slack=1):
                out.append(f"{p['id']}: labels {a['text']!r} and {b['text']!r} overlap")
    for name, ticks in p["ticks"].items():
        for i, a in enumerate(ticks):
            for b in ticks[i + 1:]:
                if intersect(a, b, slack=1):
                    out.append(f"{p['id']}: tick labels overlap on {name.split(':')[0]}")
                    break
    return out
