"""A Postman collection (v2.1) generated from the API's OpenAPI schema.

    python -m api.postman                          # writes docs/leadflow.postman_collection.json
    python -m api.postman --base-url http://api.example.com:8000 --out /tmp/leadflow.json
    python -m api.postman --out -                  # to stdout

The schema comes from `create_app(settings).openapi()`: no service is started or contacted.
`collection_from_openapi` is a pure function of that schema:

- one folder per OpenAPI tag (in the schema's tag order), one request per operation;
- URLs `{{baseUrl}}/path/:param`, with a `variable` entry per path parameter (its example as
  the value when the schema has one);
- query parameters listed but disabled unless required, with their description, default,
  allowed values and range, and the schema's example as the value;
- the key as collection-level `apikey` auth (`X-API-Key: {{apiKey}}`); operations without a
  security requirement (the health checks) are `noauth`;
- header parameters (`Idempotency-Key` gets `{{$guid}}`, a fresh key per send: set a fixed
  value to replay), and `Content-Type` for bodies, whose JSON comes from the body schema's
  example;
- a saved example response for each 2xx response whose schema carries examples.

`tests/test_postman.py` checks that the committed collection equals a fresh generation.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import uuid
from http import HTTPStatus
from pathlib import Path
from typing import Any

from leadflow.settings import PROJECT_DIR, Settings

POSTMAN_SCHEMA = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_OUT = PROJECT_DIR / "docs" / "leadflow.postman_collection.json"
HTTP_METHODS = ("get", "put", "post", "patch", "delete", "head", "options", "trace")
# Values for header parameters that a schema example cannot give (lower-case names).
HEADER_VALUES = {"idempotency-key": "{{$guid}}"}
JSON_MEDIA_TYPE = "application/json"


class _Missing:
    """No example can be built (distinct from an example that is null)."""


MISSING = _Missing()


def openapi_schema(settings: Settings | None = None) -> dict[str, Any]:
    """The API's OpenAPI schema, built without starting or contacting any service."""
    from api.main import create_app

    return create_app(settings).openapi()


# --- schema helpers ------------------------------------------------------------------------


def resolve(openapi: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with local `$ref`s (`#/components/...`) followed."""
    seen: set[str] = set()
    while "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/") or ref in seen:
            raise ValueError(f"cannot resolve $ref {ref!r}")
        seen.add(ref)
        target: Any = openapi
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        schema = target
    return schema


def _declared_example(schema: dict[str, Any]) -> Any:
    if "example" in schema:
        return schema["example"]
    examples = schema.get("examples")
    if isinstance(examples, list) and examples:
        return examples[0]
    return MISSING


def example_of(openapi: dict[str, Any], schema: dict[str, Any], _depth: int = 0) -> Any:
    """An example value made only from the examples the schema declares.

    The schema's own example first; else an object is assembled from its properties'
    examples (optional properties without one are left out, a required one without one is
    null when nullable) and an array holds one example item. MISSING when that fails.
    """
    if _depth > 20:
        return MISSING
    schema = resolve(openapi, schema)
    declared = _declared_example(schema)
    if declared is not MISSING:
        return declared
    variants = schema.get("anyOf") or schema.get("oneOf")
    if variants:
        for variant in variants:
            if resolve(openapi, variant).get("type") != "null":
                found = example_of(openapi, variant, _depth + 1)
                if found is not MISSING:
                    return found
        return MISSING
    if schema.get("type") == "array" and "items" in schema:
        item = example_of(openapi, schema["items"], _depth + 1)
        return MISSING if item is MISSING else [item]
    properties: dict[str, Any] = schema.get("properties") or {}
    if not properties:
        return MISSING
    required = set(schema.get("required") or ())
    built: dict[str, Any] = {}
    declared_any = False
    for name, prop in properties.items():
        value = example_of(openapi, prop, _depth + 1)
        if value is not MISSING:
            built[name] = value
            declared_any = True
        elif name in required:
            if not _nullable(openapi, prop):
                return MISSING
            built[name] = None
    return built if declared_any else MISSING


def _nullable(openapi: dict[str, Any], schema: dict[str, Any]) -> bool:
    schema = resolve(openapi, schema)
    variants = schema.get("anyOf") or schema.get("oneOf") or [schema]
    return any(resolve(openapi, v).get("type") == "null" for v in variants)


def _plain(openapi: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The non-null variant of an optional parameter's schema (`X | None`)."""
    schema = resolve(openapi, schema)
    variants = [resolve(openapi, v) for v in schema.get("anyOf") or schema.get("oneOf") or ()]
    concrete = [v for v in variants if v.get("type") != "null"]
    if len(concrete) == 1:
        merged = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
        return {**concrete[0], **merged}
    return schema


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _parameter_value(openapi: dict[str, Any], param: dict[str, Any]) -> str:
    schema = _plain(openapi, param.get("schema") or {})
    for candidate in (
        param.get("example", MISSING),
        next(
            (e.get("value", MISSING) for e in (param.get("examples") or {}).values()),
            MISSING,
        ),
        _declared_example(schema),
        schema.get("default", MISSING),
        (schema.get("enum") or [MISSING])[0],
    ):
        if candidate is not MISSING and candidate is not None:
            return _text(candidate)
    return "true" if schema.get("type") == "boolean" else ""


def _parameter_description(openapi: dict[str, Any], param: dict[str, Any]) -> str:
    schema = _plain(openapi, param.get("schema") or {})
    parts: list[str] = []
    text = param.get("description") or schema.get("description")
    if text:
        parts.append(text.rstrip(".") + ".")
    if schema.get("enum"):
        parts.append("One of: " + ", ".join(f"`{_text(v)}`" for v in schema["enum"]) + ".")
    if "default" in schema and schema["default"] is not None:
        parts.append(f"Default `{_text(schema['default'])}`.")
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        parts.append(f"{_text(low)} to {_text(high)}.")
    elif low is not None:
        parts.append(f"At least {_text(low)}.")
    elif high is not None:
        parts.append(f"At most {_text(high)}.")
    if schema.get("format"):
        parts.append(f"Format: {schema['format']}.")
    if param.get("required") and param.get("in") != "path":
        parts.append("Required.")
    return " ".join(parts)


# --- the collection ------------------------------------------------------------------------


def _auth(openapi: dict[str, Any]) -> dict[str, Any] | None:
    """Collection-level auth from the first API-key (or bearer) security scheme."""
    schemes: dict[str, Any] = (openapi.get("components") or {}).get("securitySchemes") or {}
    for scheme in schemes.values():
        if scheme.get("type") == "apiKey" and scheme.get("in") == "header":
            return {
                "type": "apikey",
                "apikey": [
                    {"key": "key", "value": scheme["name"], "type": "string"},
                    {"key": "value", "value": "{{apiKey}}", "type": "string"},
                    {"key": "in", "value": "header", "type": "string"},
                ],
            }
    for scheme in schemes.values():
        if scheme.get("type") == "http" and scheme.get("scheme", "").lower() == "bearer":
            return {
                "type": "bearer",
                "bearer": [{"key": "token", "value": "{{apiKey}}", "type": "string"}],
            }
    return None


def _json_body(openapi: dict[str, Any], media: dict[str, Any]) -> Any:
    if "example" in media:
        return media["example"]
    for named in (media.get("examples") or {}).values():
        if "value" in named:
            return named["value"]
    return example_of(openapi, media.get("schema") or {})


def _operations(openapi: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], list[Any]]]:
    """(method, path, operation, parameters) in schema order; path-level parameters merged."""
    found = []
    for path, item in (openapi.get("paths") or {}).items():
        shared = item.get("parameters") or []
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            own = operation.get("parameters") or []
            names = {(p.get("name"), p.get("in")) for p in own}
            merged = own + [p for p in shared if (p.get("name"), p.get("in")) not in names]
            found.append((method, path, operation, merged))
    return found


def _entry(
    openapi: dict[str, Any], param: dict[str, Any], value: str | None = None
) -> dict[str, Any]:
    """A query, path-variable or header entry: key, value, and a description when there is one."""
    entry: dict[str, Any] = {
        "key": param["name"],
        "value": _parameter_value(openapi, param) if value is None else value,
    }
    description = _parameter_description(openapi, param)
    if description:
        entry["description"] = description
    return entry


def _request(
    openapi: dict[str, Any],
    method: str,
    path: str,
    operation: dict[str, Any],
    parameters: list[dict[str, Any]],
    secured: bool,
) -> dict[str, Any]:
    segments = [s for s in path.split("/") if s]
    postman_path = [f":{s[1:-1]}" if s.startswith("{") and s.endswith("}") else s for s in segments]
    params = [resolve(openapi, p) for p in parameters]
    # Optional query parameters are listed but not sent until the user ticks them.
    query = [
        {**_entry(openapi, p), "disabled": not p.get("required", False)}
        for p in params
        if p.get("in") == "query"
    ]
    variables = [_entry(openapi, p) for p in params if p.get("in") == "path"]
    headers: list[dict[str, Any]] = []
    for p in params:
        if p.get("in") != "header":
            continue
        preset = HEADER_VALUES.get(p["name"].lower())
        header = _entry(openapi, p, preset)
        if preset is None and not p.get("required"):
            header["disabled"] = True
        headers.append(header)
    raw = "{{baseUrl}}/" + "/".join(postman_path)
    enabled = [q for q in query if not q["disabled"]]
    if enabled:
        raw += "?" + "&".join(f"{q['key']}={q['value']}" for q in enabled)
    url: dict[str, Any] = {"raw": raw, "host": ["{{baseUrl}}"], "path": postman_path}
    if query:
        url["query"] = query
    if variables:
        url["variable"] = variables
    request: dict[str, Any] = {"method": method.upper(), "header": headers, "url": url}
    if not secured:
        request["auth"] = {"type": "noauth"}
    body = operation.get("requestBody")
    if body is not None:
        body = resolve(openapi, body)
        content: dict[str, Any] = body.get("content") or {}
        media_type = JSON_MEDIA_TYPE if JSON_MEDIA_TYPE in content else next(iter(content), None)
        if media_type is not None:
            headers.append({"key": "Content-Type", "value": media_type})
            example = _json_body(openapi, content[media_type])
            raw_body = "{}" if example is MISSING else json.dumps(example, indent=2)
            request["body"] = {
                "mode": "raw",
                "raw": raw_body,
                "options": {"raw": {"language": "json"}},
            }
    description = _description(operation)
    if description:
        request["description"] = description
    return request


def _description(operation: dict[str, Any]) -> str:
    text = (operation.get("description") or "").strip()
    lines = [
        f"- `{code}` {_response_text(response)}"
        for code, response in (operation.get("responses") or {}).items()
    ]
    if lines:
        text = (text + "\n\n" if text else "") + "Responses:\n\n" + "\n".join(lines)
    return text


def _response_text(response: dict[str, Any]) -> str:
    return str(response.get("description") or "").strip()


def _saved_responses(
    openapi: dict[str, Any], operation: dict[str, Any], request: dict[str, Any]
) -> list[dict[str, Any]]:
    saved = []
    for code, response in (operation.get("responses") or {}).items():
        if not str(code).isdigit() or not 200 <= int(code) < 300:
            continue
        response = resolve(openapi, response)
        content: dict[str, Any] = response.get("content") or {}
        media = content.get(JSON_MEDIA_TYPE)
        if media is None:
            continue
        example = _json_body(openapi, media)
        if example is MISSING:
            continue
        status = HTTPStatus(int(code))
        saved.append(
            {
                "name": f"{status.value} {_response_text(response) or status.phrase}",
                "originalRequest": {
                    k: copy.deepcopy(v) for k, v in request.items() if k != "description"
                },
                "status": status.phrase,
                "code": status.value,
                "_postman_previewlanguage": "json",
                "header": [{"key": "Content-Type", "value": JSON_MEDIA_TYPE}],
                "cookie": [],
                "body": json.dumps(example, indent=2),
            }
        )
    return saved


def collection_from_openapi(openapi: dict[str, Any], base_url: str) -> dict[str, Any]:
    """A Postman Collection v2.1 of every operation in `openapi`, one folder per tag."""
    info = openapi.get("info") or {}
    title = info.get("title") or "API"
    global_security = openapi.get("security")
    tag_docs = {t["name"]: t.get("description", "") for t in openapi.get("tags") or []}
    folders: dict[str, list[dict[str, Any]]] = {name: [] for name in tag_docs}
    untagged: list[dict[str, Any]] = []
    for method, path, operation, parameters in _operations(openapi):
        security = operation.get("security", global_security)
        request = _request(openapi, method, path, operation, parameters, bool(security))
        item = {
            "name": operation.get("summary") or f"{method.upper()} {path}",
            "request": request,
            "response": _saved_responses(openapi, operation, request),
        }
        tags = operation.get("tags") or []
        if tags:
            folders.setdefault(tags[0], []).append(item)
        else:
            untagged.append(item)
    items: list[dict[str, Any]] = [
        {"name": name, "description": tag_docs.get(name, ""), "item": requests}
        for name, requests in folders.items()
        if requests
    ]
    items += untagged
    collection: dict[str, Any] = {
        "info": {
            "_postman_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"postman:{title}")),
            "name": title,
            "description": (info.get("description") or "").strip()
            + "\n\nGenerated from the OpenAPI schema by `python -m api.postman`; set the "
            "collection variables `baseUrl` and `apiKey`.",
            "version": info.get("version", ""),
            "schema": POSTMAN_SCHEMA,
        },
        "item": items,
    }
    auth = _auth(openapi)
    if auth is not None:
        collection["auth"] = auth
    collection["variable"] = [
        {"key": "baseUrl", "value": base_url, "type": "string"},
        {
            "key": "apiKey",
            "value": "",
            "type": "string",
            "description": "An API key from `leadflow keys create` (lf_<id>_<secret>).",
        },
    ]
    return collection


def render(collection: dict[str, Any]) -> str:
    """The collection as the committed file holds it."""
    return json.dumps(collection, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m api.postman",
        description="Write a Postman collection (v2.1) generated from the API's OpenAPI schema.",
    )
    parser.add_argument(
        "--base-url",
        default=DEFAULT_BASE_URL,
        help=f"baseUrl variable (default {DEFAULT_BASE_URL})",
    )
    parser.add_argument(
        "--out",
        default=str(DEFAULT_OUT),
        help="output file, '-' for stdout (default docs/leadflow.postman_collection.json)",
    )
    args = parser.parse_args(argv)
    text = render(collection_from_openapi(openapi_schema(), args.base_url.rstrip("/")))
    if args.out == "-":
        sys.stdout.write(text)
        return
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
