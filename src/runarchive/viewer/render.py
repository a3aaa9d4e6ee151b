"""The viewer's one page: ``page.html`` with its data embedded as escaped JSON.

The page is hand-written HTML, CSS and JavaScript shipped in the package (no
framework, nothing fetched): it reads the JSON from a ``<script
type="application/json">`` block and draws it with ``textContent`` only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from functools import cache
from importlib.resources import files
from typing import Any

_PLACEHOLDER = "__DATA__"
_INLINE = "script-src 'unsafe-inline'"
_SCRIPT_RE = re.compile(r"<script(?P<attrs>[^>]*)>(?P<body>.*?)</script>", re.S)

# In a <script> block the HTML parser ends the script at "</script" and treats "<!--"
# specially; escaping every <, > and & (and the two line separators JavaScript once
# refused in strings) keeps any agent data inert, and it is still the same JSON.
_ESCAPES = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def embed_json(data: Any) -> str:
    """``data`` as JSON safe inside an HTML ``<script>`` element."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).translate(_ESCAPES)


def script_hashes(page: str) -> list[str]:
    """The CSP sources (``'sha256-...'``) of the page's inline scripts: the data
    block (``type="application/json"``) is not a script and is left out."""
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(m["body"].encode()).digest()).decode() + "'"
        for m in _SCRIPT_RE.finditer(page)
        if "application/json" not in m["attrs"]
    ]


@cache
def template() -> str:
    """The page as shipped (``runarchive/viewer/page.html``), its CSP narrowed from
    ``script-src 'unsafe-inline'`` to the hashes of its own scripts: a script that
    agent data somehow smuggled into the page would not run."""
    page = (files("runarchive.viewer") / "page.html").read_text(encoding="utf-8")
    assert page.count(_INLINE) == 1, f"page.html's CSP must say {_INLINE} once"
    return page.replace(_INLINE, "script-src " + " ".join(script_hashes(page)))


def render_page(data: dict[str, Any]) -> str:
    """The page with ``data`` embedded: ``{"mode": "server"}`` for ``runarchive ui``
    (the page asks the server), or ``{"mode": "report", "runs": ..., "run_pages":
    ..., "record_pages": ...}`` for a self-contained ``report.html``."""
    page = template()
    assert page.count(_PLACEHOLDER) == 1, "page.html must hold the data placeholder once"
    return page.replace(_PLACEHOLDER, embed_json(data))
