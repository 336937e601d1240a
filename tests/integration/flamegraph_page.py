"""Assembles a flamegraph page from reporters/assets the way `memprof flamegraph` does in C, so the
browser test can open pages made from fake data with known numbers.

The template holds each of three markers exactly once; they are replaced in one pass (text put in
is never searched again): the CSS marker by vendor/d3-flamegraph.css then flamegraph.css, the JS
marker by vendor/d3.min.js, vendor/d3-flamegraph.min.js and flamegraph.js, each file followed by a
newline, and the DATA marker by the data as compact JSON with every "<" written as \\u003c, so
that no "</script" can end the script element early.
"""
import json
import re
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[2] / "reporters" / "assets"
CSS = ("vendor/d3-flamegraph.css", "flamegraph.css")
JS = ("vendor/d3.min.js", "vendor/d3-flamegraph.min.js", "flamegraph.js")
MARKERS = ("/*MEMPROF:CSS*/", "/*MEMPROF:JS*/", "/*MEMPROF:DATA*/")


def data_json(data):
    """The data as the page embeds it: compact JSON, "<" escaped."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).replace("<", "\\u003c")


def render(template_dir, data, out_path):
    """Writes the page for data (a dict following flamegraph.js's contract) to out_path, from the
    template and assets in template_dir (reporters/assets); returns out_path as a Path."""
    d = Path(template_dir)
    template = (d / "flamegraph.html").read_text(encoding="utf-8")
    for marker in MARKERS:
        if template.count(marker) != 1:
            raise ValueError(f"{d / 'flamegraph.html'}: {marker} must appear exactly once")

    def joined(names):
        parts = []
        for name in names:
            text = (d / name).read_text(encoding="utf-8")
            low = text.lower()
            for bad in ("</script", "</style", "<!--", *MARKERS):
                if bad.lower() in low:
                    raise ValueError(f"{d / name} contains {bad!r}")
            parts.append(text + "\n")
        return "".join(parts)

    pieces = {MARKERS[0]: joined(CSS), MARKERS[1]: joined(JS), MARKERS[2]: data_json(data)}
    page = re.sub("|".join(map(re.escape, MARKERS)), lambda m: pieces[m.group(0)], template)
    out = Path(out_path)
    out.write_text(page, encoding="utf-8")
    return out
