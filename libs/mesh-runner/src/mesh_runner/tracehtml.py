"""``mesh trace ID --html``: one trace as a self-contained waterfall page.

``render_html(spans)`` returns one HTML document: a row per span, indented under its parent
(``tracestore.span_tree``: entries from outside the mesh and spans whose parent is missing are
roots, marked as in the text tree), a bar on the trace's time axis, coloured by service (a colour
derived from the service's name, so a service keeps it from trace to trace, with a legend);
error rows red with their status code and message. Each row is a ``<details>`` element: a click
shows the span's ids, attributes, events and links, and a link to a span of the same trace is
an anchor (``#span-<id>``) that opens and scrolls to it.

The page works offline and is safe to open: CSS and the few lines of JavaScript are inline,
nothing is fetched (no CDN, no fonts, no images), and every value from the spans (names,
attributes, events: all untrusted) is written through ``html.escape``, never as markup or code.
The JavaScript only opens ``<details>`` on anchor navigation; the page reads fully without it.
"""

from __future__ import annotations

import hashlib
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mesh_runner.tracestore import Span, parse_rfc3339, span_tree, summarize

# Distinct on white, none of them red (errors are #d32f2f).
PALETTE = (
    "#1f77b4",  # blue
    "#ff7f0e",  # orange
    "#2ca02c",  # green
    "#9467bd",  # purple
    "#8c564b",  # brown
    "#17becf",  # cyan
    "#bcbd22",  # olive
    "#7f7f7f",  # grey
    "#393b79",  # navy
    "#e7ba52",  # gold
    "#637939",  # moss
    "#6b6ecf",  # periwinkle
)

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{title}</title>
<style>
body {{ font: 13px/1.4 system-ui, sans-serif; margin: 16px; color: #1d1d1f; }}
h1 {{ font-size: 16px; margin: 0 0 4px; }}
.summary {{ color: #555; margin-bottom: 8px; }}
.legend {{ display: flex; flex-wrap: wrap; gap: 10px; margin-bottom: 10px; }}
.legend span {{ display: inline-flex; align-items: center; gap: 4px; }}
.swatch {{ display: inline-block; width: 12px; height: 12px; border-radius: 2px; }}
.axis, summary.row {{ display: grid; grid-template-columns: 42% 58%; align-items: center; }}
.axis {{ border-bottom: 1px solid #ccc; color: #666; font-size: 11px; }}
.ticks {{ position: relative; height: 16px; }}
.ticks span {{ position: absolute; transform: translateX(-50%); white-space: nowrap; }}
.ticks span:first-child {{ transform: none; }}
.ticks span:last-child {{ transform: translateX(-100%); }}
details {{ border-bottom: 1px solid #eee; }}
summary.row {{ cursor: pointer; list-style: none; padding: 2px 0; }}
summary.row::-webkit-details-marker {{ display: none; }}
summary.row:hover {{ background: #f4f6fa; }}
.label {{ overflow: hidden; text-overflow: ellipsis; white-space: nowrap; padding-right: 8px; }}
.service {{ font-weight: 600; }}
.kind, .mark {{ color: #777; font-size: 11px; }}
.lane {{ position: relative; height: 16px; }}
.bar {{ position: absolute; top: 3px; height: 10px; min-width: 2px; border-radius: 2px; }}
.dur {{ position: absolute; top: 0; font-size: 11px; color: #444; padding: 0 4px;
        white-space: nowrap; }}
.error summary.row {{ background: #fdecec; }}
.error .label {{ color: #b00020; }}
.error .bar {{ background: #d32f2f !important; }}
.status {{ color: #b00020; font-weight: 600; }}
.info {{ padding: 6px 12px 10px; background: #fafafa; }}
.info h3 {{ font-size: 12px; margin: 8px 0 2px; }}
.info table {{ border-collapse: collapse; }}
.info td {{ padding: 1px 8px 1px 0; vertical-align: top; font-family: ui-monospace, monospace;
           font-size: 12px; word-break: break-all; }}
.info td:first-child {{ color: #555; white-space: nowrap; word-break: normal; }}
:target > summary.row {{ outline: 2px solid #1565c0; }}
</style>
</head>
<body>
<h1>{title}</h1>
<div class="summary">{summary}</div>
<div class="legend">{legend}</div>
<div class="axis"><div>service: span</div><div class="ticks">{ticks}</div></div>
<div id="rows">
{rows}
</div>
<script>
// Opening a link to another span (#span-ID) opens its row; nothing else runs here.
function openTarget() {{
  var id = decodeURIComponent(location.hash.slice(1));
  var row = id ? document.getElementById(id) : null;
  if (row && row.tagName === "DETAILS") {{
    row.open = true;
    row.scrollIntoView({{block: "center"}});
  }}
}}
window.addEventListener("hashchange", openTarget);
openTarget();
</script>
</body>
</html>
"""


def service_colors(services: Iterable[str]) -> dict[str, str]:
    """A colour for each of a page's services: the palette slot its name hashes to, so a service
    keeps its colour from trace to trace; a slot another service of the page (earlier by name)
    took moves it to the next free one, so no two share a colour (up to the palette's size).
    None is red: red marks errors."""
    taken: dict[int, str] = {}
    out: dict[str, str] = {}
    for service in sorted(set(services)):
        preferred = int.from_bytes(hashlib.sha256(service.encode()).digest()[:4], "big")
        slot = preferred % len(PALETTE)
        for step in range(len(PALETTE)):
            if (preferred + step) % len(PALETTE) not in taken:
                slot = (preferred + step) % len(PALETTE)
                break
        taken[slot] = service
        out[service] = PALETTE[slot]
    return out


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _ns(text: str) -> int:
    moment = parse_rfc3339(text)
    return (int(moment.timestamp()) * 1_000_000 + moment.microsecond) * 1000


def _ms(nanos: float) -> str:
    return f"{nanos / 1e6:.2f} ms" if nanos < 1e9 else f"{nanos / 1e9:.3f} s"


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _table(items: Mapping[str, Any]) -> str:
    if not items:
        return '<div class="kind">none</div>'
    rows = "".join(
        f"<tr><td>{_e(key)}</td><td>{_e(_value_text(value))}</td></tr>"
        for key, value in sorted(items.items())
    )
    return f"<table>{rows}</table>"


def _status_text(span: Span) -> str:
    """An error's status code (the RPC's, else the error type) and message."""
    attributes = span["attributes"]
    code = attributes.get("rpc.status_code") or attributes.get("error.type") or ""
    message = span["status"]["message"]
    return "ERROR" + (f" {code}" if code else "") + (f": {message}" if message else "")


def _details(span: Span, ids: set[str], start_ns: int) -> str:
    """The row's body: ids, timing, status, attributes, events, links."""
    begin, end = _ns(span["start_time"]), _ns(span["end_time"])
    parent = span["parent_span_id"]
    parent_cell = (
        f'<a href="#span-{_e(parent)}">{_e(parent)}</a>' if parent in ids else _e(parent or "-")
    )
    facts = (
        f"<tr><td>span</td><td>{_e(span['span_id'])}</td></tr>"
        f"<tr><td>parent</td><td>{parent_cell}</td></tr>"
        f"<tr><td>service</td><td>{_e(span['service'])}</td></tr>"
        f"<tr><td>kind</td><td>{_e(span['kind'])}</td></tr>"
        f"<tr><td>start</td><td>{_e(span['start_time'])} (+{_ms(begin - start_ns)})</td></tr>"
        f"<tr><td>duration</td><td>{_ms(end - begin)}</td></tr>"
        f"<tr><td>status</td><td>{_e(span['status']['code'])}"
        + (f": {_e(span['status']['message'])}" if span["status"]["message"] else "")
        + "</td></tr>"
    )
    events = "".join(
        f'<div class="event">+{_ms(_ns(event["time"]) - begin)} <b>{_e(event["name"])}</b>'
        f"{_table(event['attributes'])}</div>"
        for event in span.get("events", [])
    )
    links = []
    for link in span["links"]:
        target = link["span_id"]
        same = link["trace_id"] == span["trace_id"] and target in ids
        where = (
            f'<a class="link" href="#span-{_e(target)}">span {_e(target)}</a>'
            if same
            else f"trace {_e(link['trace_id'])} span {_e(target)}"
        )
        links.append(f"<div>{where}{_table(link['attributes'])}</div>")
    return (
        f'<div class="info"><table>{facts}</table>'
        f"<h3>Attributes</h3>{_table(span['attributes'])}"
        f"<h3>Events</h3>{events or '<div class=kind>none</div>'}"
        f"<h3>Links</h3>{''.join(links) or '<div class=kind>none</div>'}</div>"
    )


def render_html(spans: Sequence[Span]) -> str:
    """One trace's spans (a non-empty list, the ``mesh trace --json`` shape) as a page."""
    tree = span_tree(spans)
    summary = summarize(spans)
    colors = service_colors(summary["services"])
    ids = {s["span_id"] for s in spans}
    start_ns = min(_ns(s["start_time"]) for s in spans)
    total = max(max(_ns(s["end_time"]) for s in spans) - start_ns, 1)
    rows: list[str] = []

    def row(span: Span, depth: int) -> None:
        begin, end = _ns(span["start_time"]), _ns(span["end_time"])
        error = span["status"]["code"] == "ERROR"
        left, width = 100 * (begin - start_ns) / total, 100 * (end - begin) / total
        mark = tree.marks.get(span["span_id"], "")
        status = _status_text(span) if error else ""
        title = f"{span['service']}: {span['name']} [{span['kind']}] {status} {mark}".strip()
        # The duration beside the bar: after it, or before it when the bar ends near the edge.
        near_end = left + width > 80
        place = f"right:{100 - left:.3f}%" if near_end else f"left:{left + width:.3f}%"
        rows.append(
            f'<details id="span-{_e(span["span_id"])}" class="span{" error" if error else ""}"'
            f' data-service="{_e(span["service"])}" data-depth="{depth}">'
            f'<summary class="row"><div class="label" title="{_e(title)}"'
            f' style="padding-left:{depth * 14}px">'
            f'<span class="service" style="color:{colors[span["service"]]}">'
            f"{_e(span['service'])}</span>: <span class=name>{_e(span['name'])}</span> "
            f'<span class="kind">[{_e(span["kind"])}]</span>'
            + (f' <span class="status">{_e(status)}</span>' if error else "")
            + (f' <span class="mark">{_e(mark)}</span>' if mark else "")
            + (f' <span class="mark">links={len(span["links"])}</span>' if span["links"] else "")
            + '</div><div class="lane">'
            f'<div class="bar" style="left:{left:.3f}%;width:{width:.3f}%;'
            f'background:{colors[span["service"]]}"></div>'
            f'<div class="dur{" before" if near_end else ""}" style="{place}">'
            f"{_ms(end - begin)}</div>"
            f"</div></summary>{_details(span, ids, start_ns)}</details>"
        )
        for child in tree.children.get(span["span_id"], []):
            row(child, depth + 1)

    for root in tree.roots:
        row(root, 0)
    legend = "".join(
        f'<span class="service-key" data-service="{_e(name)}">'
        f'<i class="swatch" style="background:{colors[name]}"></i>{_e(name)}</span>'
        for name in summary["services"]
    )
    ticks = "".join(f'<span style="left:{q * 25}%">{_ms(total * q / 4)}</span>' for q in range(5))
    errors = sum(1 for s in spans if s["status"]["code"] == "ERROR")
    line = (
        f"{summary['spans']} spans, {len(summary['services'])} services,"
        f" {_ms(total)}, started {summary['start_time']}"
        + (f', <span class="status">{errors} with errors</span>' if errors else "")
    )
    return _TEMPLATE.format(
        title=_e(f"trace {summary['trace_id']}"),
        summary=line,
        legend=legend,
        ticks=ticks,
        rows="\n".join(rows),
    )
