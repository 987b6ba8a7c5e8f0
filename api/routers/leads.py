"""Leads: list with filters and cursor pagination, read one, and edit its review block."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import RedirectResponse, Response
from pymongo import ReturnDocument

from api.deps import Guard, State
from api.errors import AUTH_RESPONSES, ApiError, ErrorBody
from api.keys import Scope
from api.queries import (
    NULL,
    LeadListQuery,
    after_cursor,
    decode_cursor,
    dotted,
    encode_cursor,
    lead_query,
    sort_spec,
)
from api.schemas import LeadPage, ReviewPatch
from connectors.mongo import lead_from_document
from models.lead import Lead

router = APIRouter(prefix="/leads", tags=["leads"], responses=AUTH_RESPONSES)

LeadId = Annotated[str, Path(min_length=1, max_length=64, examples=["01JF8Q2D6TX3V5N4K7C9M2B1ZA"])]
_MERGED = {308: {"description": "The lead was merged: Location is its survivor."}}


@router.get(
    "",
    response_model=LeadPage,
    dependencies=[Depends(Guard(Scope.LEADS_READ))],
    summary="List leads",
)
def list_leads(
    state: State, params: Annotated[LeadListQuery, Query()], response: Response
) -> Response:
    """Leads matching every filter given, best score first by default; follow `next_cursor`
    for the next page. Merged leads (tombstones) are never listed."""
    limit = params.limit
    field, direction = sort_spec(params.sort)
    query = lead_query(params)
    if params.cursor:
        value, tie = decode_cursor(params.cursor, params.sort)
        query = {"$and": [query, after_cursor(field, direction, value, "lead_id", tie)]}
    docs = list(
        state.store.leads.find(query, {"_id": 0})
        .sort([(field, direction), ("lead_id", 1)])
        .limit(limit + 1)
    )
    next_cursor = None
    if len(docs) > limit:
        docs = docs[:limit]
        last = docs[-1]
        next_cursor = encode_cursor(params.sort, dotted(last, field), last["lead_id"])
    # Validated once and serialised by pydantic directly: returning the model would have
    # FastAPI dump, re-validate and re-encode every lead (4x the CPU of the whole request).
    page = LeadPage.model_validate({"items": docs, "next_cursor": next_cursor})
    # `response` holds the headers the dependencies set (rate limits).
    return Response(
        page.model_dump_json(), media_type="application/json", headers=dict(response.headers)
    )


def _lead_or_redirect(doc: dict[str, Any] | None, lead_id: str) -> Lead | RedirectResponse:
    if doc is None:
        raise ApiError(404, f"No lead {lead_id}.")
    if doc.get("merged_into"):
        # 308 keeps the method and body, so a PATCH follows to the survivor too.
        return RedirectResponse(f"/leads/{doc['merged_into']}", status_code=308)
    return lead_from_document(doc)


@router.get(
    "/{lead_id}",
    response_model=Lead,
    responses={**_MERGED, 404: {"model": ErrorBody, "description": "No such lead."}},
    dependencies=[Depends(Guard(Scope.LEADS_READ))],
    summary="Read one lead",
)
def get_lead(state: State, lead_id: LeadId) -> Any:
    return _lead_or_redirect(state.store.leads.find_one({"lead_id": lead_id}, {"_id": 0}), lead_id)


@router.patch(
    "/{lead_id}",
    response_model=Lead,
    responses={**_MERGED, 404: {"model": ErrorBody, "description": "No such lead."}},
    dependencies=[Depends(Guard(Scope.LEADS_WRITE))],
    summary="Edit a lead's review (status, tags, notes, owner)",
)
def patch_review(state: State, lead_id: LeadId, patch: ReviewPatch) -> Any:
    """Only the analyst-owned `review` block changes; pipeline runs never overwrite it."""
    changes = {f"review.{k}": v for k, v in patch.model_dump(exclude_unset=True).items()}
    doc = state.store.leads.find_one_and_update(
        {"lead_id": lead_id, "merged_into": NULL},
        {"$set": changes},
        projection={"_id": 0},
        return_document=ReturnDocument.AFTER,
    )
    if doc is None:
        return _lead_or_redirect(
            state.store.leads.find_one(
                {"lead_id": lead_id}, {"_id": 0, "merged_into": 1, "lead_id": 1}
            ),
            lead_id,
        )
    return lead_from_document(doc)
