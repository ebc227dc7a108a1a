"""The viewer as one static page: `export_html(bundle, out_dir)` writes out_dir/index.html.

One self-contained file: viewer.css and viewer.js (the JavaScript twin of `views`) inlined into
page.html, the bundle inlined as JSON. It loads nothing (no network, no server) and works opened
from file://. Standard library only: writing it needs neither gradio nor a browser.
"""

from __future__ import annotations

from pathlib import Path

from karel_hf.utils import atomic_write_text

from .data import bundle_json

HERE = Path(__file__).resolve().parent
PAGE_NAME = "index.html"


def page_html(bundle: dict) -> str:
    """The page's text: the template with the CSS, the script and the bundle inlined."""
    template = (HERE / "page.html").read_text(encoding="utf-8")
    # inside <script>, "</script>" or "<!--" in a string would end or confuse the element: escape "<"
    data = bundle_json(bundle).replace("<", "\\u003c")
    return (template.replace("/*viewer:css*/", (HERE / "viewer.css").read_text(encoding="utf-8"))
            .replace("/*viewer:js*/", (HERE / "viewer.js").read_text(encoding="utf-8"))
            .replace("/*viewer:data*/", data))  # last: the data's text is never searched for markers


def export_html(bundle: dict, out_dir: str | Path) -> Path:
    """Write `out_dir/index.html` (atomically; the folder is created) and return its path."""
    return atomic_write_text(Path(out_dir) / PAGE_NAME, page_html(bundle))
