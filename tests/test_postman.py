"""The Postman collection generated from the OpenAPI schema (api/postman.py): complete, right,
and the committed copy in docs/ is what the generator makes today. No services needed."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api import postman
from api.postman import (
    DEFAULT_BASE_URL,
    DEFAULT_OUT,
    POSTMAN_SCHEMA,
    collection_from_openapi,
    openapi_schema,
    render,
)
from api.schemas import ReviewPatch, RunOut
from models.search import SearchSpec


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return openapi_schema()


@pytest.fixture(scope="module")
def collection(openapi: dict[str, Any]) -> dict[str, Any]:
    return collection_from_openapi(openapi, DEFAULT_BASE_URL)


def requests_of(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every request item under a collection or folder."""
    for item in node["item"]:
        if "request" in item:
            yield item
        else:
            yield from requests_of(item)


def openapi_path(item: dict[str, Any]) -> str:
    """The OpenAPI path template of a Postman request (`:name` back to `{name}`)."""
    segments = item["request"]["url"]["path"]
    return "/" + "/".join(f"{{{s[1:]}}}" if s.startswith(":") else s for s in segments)


def find(collection: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    matches = [
        item
        for item in requests_of(collection)
        if item["request"]["method"] == method and openapi_path(item) == path
    ]
    assert len(matches) == 1, f"{method} {path}: {len(matches)} requests"
    return matches[0]


def test_every_operation_exactly_once(openapi: dict[str, Any], collection: dict) -> None:
    expected = Counter(
        (method.upper(), path)
        for path, operations in openapi["paths"].items()
        for method in operations
        if method in postman.HTTP_METHODS
    )
    got = Counter(
        (item["request"]["method"], openapi_path(item)) for item in requests_of(collection)
    )
    assert got == expected
    assert set(got.values()) == {1}
    # The routes this API has today, so a route silently left out of the schema shows too.
    assert ("POST", "/runs") in got
    assert ("PATCH", "/leads/{lead_id}") in got
    assert ("GET", "/health/ready") in got


def test_one_folder_per_tag_in_schema_order(openapi: dict[str, Any], collection: dict) -> None:
    tags = [tag["name"] for tag in openapi["tags"]]
    assert [folder["name"] for folder in collection["item"]] == tags
    for folder in collection["item"]:
        assert folder["description"]
        for item in folder["item"]:
            operation = openapi["paths"][openapi_path(item)][item["request"]["method"].lower()]
            assert operation["tags"][0] == folder["name"]
            assert item["name"] == operation["summary"]


def test_path_variables_of_a_parametrised_route(collection: dict[str, Any]) -> None:
    url = find(collection, "GET", "/runs/{run_id}/quarantine")["request"]["url"]
    assert url["raw"] == "{{baseUrl}}/runs/:run_id/quarantine"
    assert url["host"] == ["{{baseUrl}}"]
    assert url["path"] == ["runs", ":run_id", "quarantine"]
    assert [v["key"] for v in url["variable"]] == ["run_id"]
    # Optional query parameters are listed, described where the schema says something, and
    # not sent until ticked.
    assert [(q["key"], q["value"], q["disabled"]) for q in url["query"]] == [
        ("cursor", "", True),
        ("limit", "100", True),
    ]
    assert "1 to 500" in url["query"][1]["description"]

    lead = find(collection, "GET", "/leads/{lead_id}")["request"]["url"]
    assert lead["variable"] == [{"key": "lead_id", "value": "01JF8Q2D6TX3V5N4K7C9M2B1ZA"}]

    # Every request: one variable per `:segment`, nothing else.
    for item in requests_of(collection):
        url = item["request"]["url"]
        wanted = [s[1:] for s in url["path"] if s.startswith(":")]
        assert [v["key"] for v in url.get("variable", [])] == wanted
        assert url["raw"].split("?")[0] == "{{baseUrl}}/" + "/".join(url["path"])


def test_query_parameters_of_the_lead_list(collection: dict[str, Any]) -> None:
    query = {q["key"]: q for q in find(collection, "GET", "/leads")["request"]["url"]["query"]}
    assert list(query) == [
        "category", "city", "min_score", "has_email", "run", "tag", "owner", "review_status",
        "q", "sort", "cursor", "limit",
    ]  # fmt: skip
    assert all(q["disabled"] for q in query.values())
    assert query["category"]["value"] == "dentist"  # the schema's example
    assert query["sort"]["value"] == "-score"  # the default
    assert "`-first_seen`" in query["sort"]["description"]
    assert query["has_email"]["value"] == "true"
    export = find(collection, "GET", "/export")["request"]["url"]["query"]
    assert {q["key"]: q["value"] for q in export}["format"] == "csv"


def test_post_runs_body_is_a_valid_search_spec(collection: dict[str, Any]) -> None:
    request = find(collection, "POST", "/runs")["request"]
    assert request["body"]["mode"] == "raw"
    assert request["body"]["options"] == {"raw": {"language": "json"}}
    spec = SearchSpec.model_validate_json(request["body"]["raw"])
    assert spec.category == "dentist"
    headers = {h["key"]: h for h in request["header"]}
    assert headers["Content-Type"]["value"] == "application/json"
    assert headers["Idempotency-Key"]["value"] == "{{$guid}}"
    assert not headers["Idempotency-Key"].get("disabled", False)


def test_patch_body_is_a_valid_review_patch(collection: dict[str, Any]) -> None:
    request = find(collection, "PATCH", "/leads/{lead_id}")["request"]
    patch = ReviewPatch.model_validate_json(request["body"]["raw"])
    assert patch.status == "qualified"


def test_saved_example_responses(collection: dict[str, Any]) -> None:
    saved = {r["code"]: r for r in find(collection, "POST", "/runs")["response"]}
    assert sorted(saved) == [200, 201]
    assert saved[201]["status"] == "Created"
    for response in saved.values():
        RunOut.model_validate_json(response["body"])
        assert "description" not in response["originalRequest"]
    listing = find(collection, "GET", "/runs")["response"]
    assert [r["code"] for r in listing] == [200]
    assert json.loads(listing[0]["body"])["items"][0]["state"] == "COMPLETED"
    # No example in the schema, no made-up response.
    assert find(collection, "GET", "/health/ready")["response"] == []


def test_auth_is_an_api_key_header(collection: dict[str, Any]) -> None:
    assert collection["info"]["schema"] == POSTMAN_SCHEMA
    auth = collection["auth"]
    assert auth["type"] == "apikey"
    attributes = {a["key"]: a["value"] for a in auth["apikey"]}
    assert attributes == {"key": "X-API-Key", "value": "{{apiKey}}", "in": "header"}
    variables = {v["key"]: v["value"] for v in collection["variable"]}
    assert variables == {"baseUrl": "http://127.0.0.1:8000", "apiKey": ""}
    # The health checks need no key; every other request inherits the collection's.
    for item in requests_of(collection):
        open_route = openapi_path(item).startswith("/health")
        assert ("auth" in item["request"]) is open_route
        if open_route:
            assert item["request"]["auth"] == {"type": "noauth"}


def test_committed_collection_is_up_to_date(collection: dict[str, Any]) -> None:
    committed = DEFAULT_OUT.read_text(encoding="utf-8")
    assert committed == render(collection), (
        f"{DEFAULT_OUT} is stale: regenerate it with `python -m api.postman`"
    )


def test_cli_base_url_and_out(
    openapi: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postman, "openapi_schema", lambda: openapi)
    out = tmp_path / "sub" / "collection.json"
    postman.main(["--base-url", "https://api.example.com/", "--out", str(out)])
    written = json.loads(out.read_text(encoding="utf-8"))
    assert {v["key"]: v["value"] for v in written["variable"]}["baseUrl"] == (
        "https://api.example.com"
    )
    assert written["item"] == collection_from_openapi(openapi, "x")["item"]
