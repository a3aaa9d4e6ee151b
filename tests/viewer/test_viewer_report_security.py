"""report.html with hostile agent data, opened in a real headless Chromium from file://:
the embedded JSON cannot leave its ``<script type="application/json">`` block, every
view draws the data as text, and no script of anyone else runs (a sentinel global
stays unset, no dialog opens, no console message, no page error). The page's CSP
allows only its own scripts by hash: a script smuggled into the file does not run.
Then the same run served by ``runarchive ui``, a DNS-rebinding name, and another
site's page trying to read the API."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.browser import launch_another, launch_chromium

from runarchive import Archive, Policy, Reader
from runarchive.viewer.render import render_page
from runarchive.viewer.server import serving

pytestmark = pytest.mark.slow

# What an agent's data may hold: each would end the data block, open a comment, run a
# script or an event handler, or break a JavaScript string, were it not escaped.
PAYLOADS = [
    "</script><script>window.pwned=1</script>",
    "</SCRIPT ><img src=x onerror=window.pwned=1>",
    '"><img src=x onerror="window.pwned=1">',
    "<!--<script>window.pwned=1</script>-->",
    "<svg onload=window.pwned=1>",
    "javascript:window.pwned=1",
    "line\u2028sep\u2029para",
    "nul\u0000byte",
    "&lt;script&gt;window.pwned=1&lt;/script&gt;",
    "<![CDATA[</script><script>window.pwned=1</script>]]>",
]
NAME = "</script><img src=x onerror=window.pwned=1>"  # a checkpoint name, lane, kind, agent


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_chromium()


class Tab:
    """A page that records every dialog, console message and page error."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.console: list[str] = []
        self.errors: list[str] = []
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.on("console", lambda m: self.console.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, url: str) -> None:
        self.page.goto(url)
        self.page.wait_for_function("() => document.body.dataset.ready === '1'")

    def show(self, url: str) -> str:
        """Go to ``url`` (a hash route of the open page) and return its text."""
        self.page.evaluate("document.body.dataset.ready = ''")
        self.page.evaluate("(u) => { location.href = u }", url)
        self.page.wait_for_function("() => document.body.dataset.ready === '1'")
        text: str = self.page.locator("main").inner_text()
        return text

    def assert_nothing_ran(self) -> None:
        assert self.page.evaluate("window.pwned") is None
        assert self.dialogs == []
        assert self.errors == []
        # A CSP violation is reported on the console: a blocked script is still an attack.
        assert self.console == []
        for tag in ("img", "script", "svg", "iframe", "object", "embed"):
            assert self.page.locator(f"main {tag}").count() == 0, tag


@pytest.fixture
def tab(browser: Any) -> Iterator[Tab]:
    context = browser.new_context(java_script_enabled=True)
    try:
        yield Tab(context.new_page())
    finally:
        context.close()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export bundle of a run whose every agent-supplied field is hostile."""
    root = tmp_path_factory.mktemp("report")
    url = (root / "bucket").as_uri()
    state = {p: p for p in PAYLOADS} | {"list": PAYLOADS}
    archive = Archive.open(url, cache_dir=root / "c", policy=Policy(keep_all=True))
    with archive:
        with archive.start_run(agent=NAME, run_id="run-x", metadata=state) as run:
            run.checkpoint(NAME, {"step": 1, **state})
            run.event(NAME, state, lane=NAME)
            run.checkpoint(NAME, {"step": 2, **state, "added": PAYLOADS[0]})
            run.complete(state)
        with archive.start_run(agent=NAME, run_id="run-failed") as run:
            run.fail(PAYLOADS[1])
        archive.flush()
    dest = root / "bundle"
    with Reader.open(url) as reader:
        reader.export(["run-x", "run-failed"], dest=dest, progress=lambda done, total: None)
    return dest / "report.html"


def data_block(page: str) -> str:
    (block,) = re.findall(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    return block


def test_the_embedded_json_stays_in_its_block(bundle: Path) -> None:
    page = bundle.read_text(encoding="utf-8")
    block = data_block(page)
    for needle in ("<", ">", "&", "\u2028", "\u2029", "\u0000"):
        assert needle not in block, repr(needle)
    data = json.loads(block)
    assert data["record_pages"]["run-x"]["1"]["record"]["state"]["list"] == PAYLOADS
    # only the page's own two script elements: the data block and the code
    assert len(re.findall(r"<script\b", page, re.I)) == 2


def test_the_report_only_allows_its_own_script(bundle: Path) -> None:
    page = bundle.read_text(encoding="utf-8")
    (csp,) = re.findall(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page)
    script_src = next(d for d in csp.split(";") if d.strip().startswith("script-src"))
    assert "'unsafe-inline'" not in script_src
    assert "'sha256-" in script_src


def test_every_view_of_a_hostile_run_shows_text_and_runs_nothing(bundle: Path, tab: Tab) -> None:
    base = bundle.as_uri()
    tab.open(base)
    runs = tab.page.locator("main").inner_text()
    assert NAME in runs  # the agent column, as text
    text = tab.show(base + "#/run/run-x")
    assert NAME in text  # the lane header and the labels
    for payload in PAYLOADS[:3]:
        # the metadata and result trees show strings as JSON: quoted, escaped
        assert json.dumps(payload) in text
    for seq in (1, 2, 3):
        text = tab.show(base + f"#/run/run-x/{seq}")
        assert json.dumps(PAYLOADS[0]) in text
    assert "added /added" in tab.page.locator("#diff").inner_text()
    text = tab.show(base + "#/run/run-failed")
    assert PAYLOADS[1] in text
    tab.assert_nothing_ran()


@pytest.mark.parametrize(
    "route",
    [
        "#/run/%3Cimg%20src%3Dx%20onerror%3Dwindow.pwned%3D1%3E",
        "#/run/__proto__",
        "#/run/constructor/1",
        "#/run/run-x/%3Csvg%20onload%3Dwindow.pwned%3D1%3E",
        "#/?status=%3Cscript%3Ewindow.pwned%3D1%3C%2Fscript%3E",
        "#javascript:window.pwned=1",
    ],
)
def test_a_crafted_link_into_the_report_runs_nothing(bundle: Path, tab: Tab, route: str) -> None:
    tab.open(bundle.as_uri())
    tab.show(bundle.as_uri() + route)
    tab.page.evaluate("window.pwned")  # the page still answers
    assert tab.page.evaluate("window.pwned") is None
    assert tab.dialogs == []
    assert tab.page.locator("main img, main script, main svg").count() == 0


@pytest.mark.parametrize("name", ["__proto__", "constructor", "toString", "hasOwnProperty"])
def test_a_link_to_an_objects_own_name_is_no_run_of_the_report(
    bundle: Path, tab: Tab, name: str
) -> None:
    # The embedded runs are a JSON object: a lookup by key must see only its own keys,
    # not Object.prototype's (which once showed a JavaScript error instead).
    tab.open(bundle.as_uri())
    assert f"run {name} is not in this report" in tab.show(bundle.as_uri() + f"#/run/{name}")
    text = tab.show(bundle.as_uri() + f"#/run/{name}/1")
    assert f"record {name} 1 is not in this report" in text
    text = tab.show(bundle.as_uri() + "#/run/run-x/" + name)
    assert f"record run-x {name} is not in this report" in text


def _smuggle(page: str, tmp_path: Path, *, keep_csp: bool) -> str:
    """``page`` with a script and an event handler added outside the data block, as if
    an escaping bug let them through (and, for the control, the CSP removed)."""
    evil = '<img src="x" onerror="window.pwned=1"><script>window.pwned=2</script>'
    page = page.replace('<main id="main"></main>', '<main id="main"></main>' + evil, 1)
    if not keep_csp:
        page = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page)
    path = tmp_path / ("kept.html" if keep_csp else "stripped.html")
    path.write_text(page, encoding="utf-8")
    return path.as_uri()


def test_a_script_smuggled_into_the_report_is_blocked_by_its_csp(
    bundle: Path, tab: Tab, tmp_path: Path
) -> None:
    page = bundle.read_text(encoding="utf-8")
    tab.open(_smuggle(page, tmp_path, keep_csp=True))
    assert tab.page.evaluate("window.pwned") is None
    assert tab.page.locator("#runs tbody tr").count() == 2  # the page's own script ran
    # Control: without the CSP the same file does run the smuggled script, so the
    # sentinel would catch one.
    tab.open(_smuggle(page, tmp_path, keep_csp=False))
    assert tab.page.evaluate("window.pwned") in (1, 2)


def test_a_report_of_hostile_ids_and_fields_runs_nothing(tab: Tab, tmp_path: Path) -> None:
    """The export refuses bad run ids; render_page itself must not rely on that."""
    bad = PAYLOADS[0]
    row = {
        "run_id": bad,
        "status": bad,
        "agent": bad,
        "host": bad,
        "created_at": bad,
        "ended_at": None,
        "records": bad,
        "stored_bytes": bad,
        "sealed": False,
        "interrupted": True,
    }
    run_page = {
        **row,
        "metadata": {bad: bad},
        "result": None,
        "error": bad,
        "last_seq": 2,
        "sealed": [bad],
        "lanes": [bad],
        "records": [{"seq": 1, "ts": bad, "type": "event", "label": bad, "lane": bad}],
        "gaps": [[2, 2]],
        "verify": {
            "ok": False,
            "segments": bad,
            "records": bad,
            "problems": [{"severity": bad, "kind": bad, "run_id": bad, "key": bad, "message": bad}],
        },
        "missing_key": bad,
    }
    record = {
        "record": {"type": bad, bad: bad},
        "previous_seq": bad,
        "diff": [{"op": bad, "path": bad}],
    }
    page = render_page(
        {
            "mode": "report",
            "export": {"created_at": bad, "source": bad, "runarchive_version": bad},
            "runs": {"runs": [row], "next_page": bad},
            "run_pages": {bad: run_page},
            "record_pages": {bad: {"1": record}},
        }
    )
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    tab.open(path.as_uri())
    assert bad in tab.page.locator("main").inner_text()
    tab.page.locator("#runs a").first.click()
    tab.page.wait_for_selector("#timeline")
    assert bad in tab.page.locator("main").inner_text()
    tab.page.locator("#timeline a.lane").first.click()
    tab.page.wait_for_selector("#diff")
    assert bad in tab.page.locator("#diff").inner_text()
    tab.assert_nothing_ran()


# -- the same page served by `runarchive ui` ------------------------------------------


@pytest.fixture(scope="module")
def site(bundle: Path) -> Iterator[str]:
    """`runarchive ui` on the bucket the bundle was exported from."""
    url = (bundle.parent.parent / "bucket").as_uri()
    with Reader.open(url) as reader, serving(reader) as port:
        yield f"http://127.0.0.1:{port}/"


def test_every_served_view_of_a_hostile_run_shows_text_and_runs_nothing(
    site: str, tab: Tab
) -> None:
    tab.open(site)
    assert NAME in tab.page.locator("main").inner_text()
    assert NAME in tab.show(site + "#/run/run-x")
    for seq in (1, 2, 3):
        assert json.dumps(PAYLOADS[0]) in tab.show(site + f"#/run/run-x/{seq}")
    assert PAYLOADS[1] in tab.show(site + "#/run/run-failed")
    tab.show(site + "#/run/%3Cimg%20src%3Dx%20onerror%3Dwindow.pwned%3D1%3E")
    assert "invalid run_id" in tab.page.locator("#error").inner_text()
    # the 400 above is the browser's one console message: anything else is an attack
    tab.console = [m for m in tab.console if "400 (Bad Request)" not in m]
    tab.assert_nothing_ran()


@pytest.fixture(scope="module")
def rebinding_browser(browser: Any) -> Iterator[Any]:
    """A browser for which evil.example resolves to 127.0.0.1: a DNS-rebinding attack
    after the rebinding, with no DNS server involved."""
    rebound = launch_another(browser, "--host-resolver-rules=MAP evil.example 127.0.0.1")
    try:
        yield rebound
    finally:
        rebound.close()


def test_a_rebound_name_gets_403_and_no_data(site: str, rebinding_browser: Any) -> None:
    port = site.rsplit(":", 1)[1].strip("/")
    context = rebinding_browser.new_context()
    try:
        page = context.new_page()
        for path in ("/", "/api/runs", "/api/run?id=run-x"):
            answer = page.goto(f"http://evil.example:{port}{path}")
            assert answer.status == 403, path
            text = page.locator("body").inner_text()
            assert "run-x" not in text
            assert "Host" in text
    finally:
        context.close()


def test_another_sites_page_cannot_read_the_api(site: str, tab: Tab) -> None:
    # A page of evil.example (served by Playwright, no network) fetching the API.
    script = f"""<script>
      window.got = "pending";
      fetch("{site}api/runs").then((r) => r.text()).then((t) => {{ window.got = t }},
        (e) => {{ window.got = "refused: " + e }});
    </script>"""
    tab.page.route(
        "http://evil.example/**",
        lambda route: route.fulfill(status=200, content_type="text/html", body=script),
    )
    tab.page.goto("http://evil.example/")
    tab.page.wait_for_function("() => window.got !== 'pending'")
    got = tab.page.evaluate("window.got")
    assert got.startswith("refused: "), got
    assert "run-x" not in got
