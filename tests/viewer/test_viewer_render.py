"""The page: data embedded so that no agent value can end the script or be parsed as
HTML, and the page draws values with textContent only."""

from __future__ import annotations

import json
import re

from runarchive.viewer.render import embed_json, render_page, template

HOSTILE = {
    "a": "</script><script>window.pwned=1</script>",
    "b": '"><img src=x onerror="window.pwned=1">',
    "c": "<!-- & \u2028 \u2029 -->",
    "</script>": ["<SCRIPT>"],
}


def test_embedded_json_has_no_markup_and_reads_back_the_same() -> None:
    text = embed_json(HOSTILE)
    assert not set("<>&") & set(text)
    assert "\u2028" not in text
    assert "\u2029" not in text
    assert json.loads(text) == HOSTILE


def test_the_page_holds_the_data_in_one_json_block_only() -> None:
    page = render_page({"mode": "report", "runs": {"runs": [HOSTILE]}})
    blocks = re.findall(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    assert len(blocks) == 1
    assert json.loads(blocks[0])["runs"]["runs"] == [HOSTILE]
    # only the page's own two script elements: the data block and the code
    assert len(re.findall(r"<script\b", page, re.I)) == 2
    assert "onerror" not in page.replace(blocks[0], "")


def test_the_page_never_parses_data_as_html_nor_fetches_from_elsewhere() -> None:
    page = template()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "default-src 'none'" in page  # the CSP forbids loading anything else
