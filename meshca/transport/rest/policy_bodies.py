"""Policy bodies as operators write them: JSON, or YAML with one or several `---` documents
(as `kubectl apply -f` takes them). The body's size is already bounded (guards.py)."""

from __future__ import annotations

import json
from typing import Any

import yaml
from fastapi import Request
from starlette.exceptions import HTTPException

from meshca.transport.rest.problems import BadRequest

JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
ACCEPTED = ", ".join((*JSON_TYPES, *YAML_TYPES))
_MAX_DOCUMENTS = 500

# How the OpenAPI document shows the bodies these routes read themselves.
def openapi_body(description: str) -> dict[str, Any]:
    schema = {"type": "object", "additionalProperties": True}
    return {"requestBody": {"required": True, "description": description, "content": {
        "application/json": {"schema": schema},
        "application/yaml": {"schema": {"type": "string"}}}}}


async def policy_documents(request: Request) -> list[Any]:
    """The body's documents, in order: a JSON object is one, a JSON array several; YAML
    documents are split at `---` (empty ones skipped). 400 when the text does not parse, 415
    for another media type."""
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    raw = await request.body()
    if media in JSON_TYPES or media.endswith("+json"):
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the body is not JSON: {exc}") from None
        documents = data if isinstance(data, list) else [data]
    elif media in YAML_TYPES:
        try:
            documents = [d for d in yaml.load_all(raw, Loader=yaml.CSafeLoader) if d is not None]
        except yaml.YAMLError as exc:
            raise BadRequest(f"the body is not YAML: {' '.join(str(exc).split())}") from None
    else:
        raise HTTPException(415, f"Content-Type {media!r} is not accepted here; send {ACCEPTED}")
    if not documents:
        raise BadRequest("the body holds no document")
    if len(documents) > _MAX_DOCUMENTS:
        raise BadRequest(f"the body holds {len(documents)} documents; at most {_MAX_DOCUMENTS}")
    return documents
