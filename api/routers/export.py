"""Export: every lead matching the list filters, streamed as CSV, JSON lines or XLSX."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from api.deps import Guard, State
from api.errors import AUTH_RESPONSES
from api.keys import Scope
from api.queries import ExportQuery, lead_query, sort_spec

router = APIRouter(tags=["export"], responses=AUTH_RESPONSES)

COLUMNS = (
    "lead_id", "name", "category", "categories", "street", "city", "state", "postal_code",
    "country", "phone", "website", "domain", "best_email", "emails", "rating", "review_count",
    "score", "score_reasons", "review_status", "tags", "owner", "notes", "sources",
    "first_seen", "last_seen",
)  # fmt: skip
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
_BATCH = 500


def export_row(doc: dict[str, Any]) -> dict[str, Any]:
    """One flat row per lead; lists joined with '; ' (spreadsheets have no lists)."""
    address = doc.get("address") or {}
    score = doc.get("score") or {}
    review = doc.get("review") or {}

    def joined(values: Any) -> str:
        return "; ".join(str(v) for v in values or [])

    return {
        "lead_id": doc.get("lead_id"),
        "name": doc.get("name"),
        "category": doc.get("category"),
        "categories": joined(doc.get("categories")),
        "street": address.get("street"),
        "city": address.get("city"),
        "state": address.get("state"),
        "postal_code": address.get("postal_code"),
        "country": address.get("country"),
        "phone": doc.get("phone"),
        "website": doc.get("website"),
        "domain": doc.get("domain"),
        "best_email": doc.get("best_email"),
        "emails": joined(e.get("value") for e in doc.get("emails") or []),
        "rating": doc.get("rating"),
        "review_count": doc.get("review_count"),
        "score": score.get("value"),
        "score_reasons": joined(score.get("reasons")),
        "review_status": review.get("status") or "new",
        "tags": joined(review.get("tags")),
        "owner": review.get("owner"),
        "notes": review.get("notes"),
        "sources": joined(sorted({s.get("source") for s in doc.get("sources") or []})),
        "first_seen": _iso(doc.get("first_seen")),
        "last_seen": _iso(doc.get("last_seen")),
    }


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _csv(rows: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    for n, row in enumerate(rows, 1):
        writer.writerow(row)
        if n % _BATCH == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def _jsonl(rows: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    chunk: list[str] = []
    for row in rows:
        chunk.append(json.dumps(row, ensure_ascii=False))
        if len(chunk) == _BATCH:
            yield ("\n".join(chunk) + "\n").encode()
            chunk = []
    if chunk:
        yield ("\n".join(chunk) + "\n").encode()


def _xlsx(rows: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    # An XLSX file is a zip whose directory comes last: it is written whole (openpyxl's
    # write-only mode keeps memory flat), spooled to disk when large, then streamed.
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("leads")
    sheet.append(list(COLUMNS))
    for row in rows:
        sheet.append([row[c] for c in COLUMNS])
    with tempfile.SpooledTemporaryFile(max_size=16 * 2**20) as spool:
        workbook.save(spool)
        spool.seek(0)
        while block := spool.read(2**16):
            yield block


WRITERS = {"csv": _csv, "jsonl": _jsonl, "xlsx": _xlsx}


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The matching leads, one row each.",
            "content": {media: {} for media in MEDIA_TYPES.values()},
        }
    },
    dependencies=[Depends(Guard(Scope.EXPORT_READ, route_limit="export"))],
    summary="Export leads (CSV, JSON lines, XLSX)",
)
def export_leads(
    request: Request,
    state: State,
    params: Annotated[ExportQuery, Query()],
) -> StreamingResponse:
    """The same filters and order as `GET /leads`, every match (up to
    `LEADFLOW_API_EXPORT_MAX_ROWS`) in one download."""
    field, direction = sort_spec(params.sort)
    cursor = (
        state.store.leads.find(lead_query(params), {"_id": 0})
        .sort([(field, direction), ("lead_id", 1)])
        .limit(state.settings.api_export_max_rows)
        .batch_size(_BATCH)
    )

    def rows() -> Iterator[dict[str, Any]]:
        with cursor:
            for doc in cursor:
                yield export_row(doc)

    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    headers = {
        "Content-Disposition": f'attachment; filename="leads-{stamp}.{params.format}"',
        **getattr(request.state, "rate_limit_headers", {}),
    }
    return StreamingResponse(
        WRITERS[params.format](rows()), media_type=MEDIA_TYPES[params.format], headers=headers
    )
