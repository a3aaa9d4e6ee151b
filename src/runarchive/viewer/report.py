"""``report.html``: the viewer's page with an export bundle's runs embedded.

Built by the export from the files it has staged (``run.json`` and
``records.jsonl`` of each run), so the report shows exactly what the bundle holds:
one self-contained file an auditor opens offline, no server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runarchive.compliance.bundle import REPORT, parse_lines
from runarchive.viewer.data import record_pages, run_timeline
from runarchive.viewer.render import render_page

__all__ = ["REPORT", "report_html"]

_HEADER = ("run_id", "agent", "status", "created_at", "ended_at", "metadata", "result", "error")


def _run_row(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": doc["run_id"],
        "status": doc["status"],
        "agent": doc["agent"],
        "host": "",
        "created_at": doc["created_at"],
        "ended_at": doc["ended_at"],
        "records": doc["records"],
        "last_seq": doc["last_seq"],
        "stored_bytes": doc["stored_bytes"],
        "sealed": bool(doc.get("encryption")) and not doc["encryption"]["decrypted"],
        "interrupted": False,
    }


def _checked(doc: dict[str, Any], created_at: str) -> dict[str, Any]:
    # What the export itself checked before staging each segment (bundle.check_segment):
    # SHA-256, size, header and the hash chain up to chain_head; anything failing
    # would have stopped the export, so a written report always says ok.
    return {
        "ok": True,
        "runs": 1,
        "segments": len(doc["segments"]),
        "records": doc["records"],
        "chain_head": doc["chain_head"],
        "checked_at": created_at,
        "problems": [],
    }


def report_html(export_doc: dict[str, Any], root: Path) -> str:
    """The report of the bundle staged at ``root`` whose ``export.json`` is
    ``export_doc``: the runs table, each run's timeline and record pages (a sealed run:
    its header only, as the bundle holds no plaintext records), and what was verified."""
    rows, run_pages, pages = [], {}, {}
    for entry in export_doc["runs"]:
        rid = entry["run_id"]
        base = root / "runs" / rid
        doc = json.loads((base / "run.json").read_bytes())
        records_file = base / "records.jsonl"
        records = parse_lines(records_file.read_bytes(), rid) if records_file.exists() else []
        header = {k: doc[k] for k in _HEADER} | {"host": "", "last_seq": doc["last_seq"]}
        sealed = bool(doc.get("encryption")) and not doc["encryption"]["decrypted"]
        header["sealed"] = ["records (exported sealed)"] if sealed else []
        page = run_timeline(header, records)
        page["verify"] = _checked(doc, export_doc["created_at"])
        run_pages[rid] = page
        pages[rid] = record_pages(records)
        rows.append(_run_row(doc))
    data = {
        "mode": "report",
        "export": {k: export_doc[k] for k in ("created_at", "source", "runarchive_version")},
        "runs": {"runs": rows, "next_page": None},
        "run_pages": run_pages,
        "record_pages": pages,
    }
    return render_page(data)
