"""The API's front door, routed publicly by nginx under /api/: an index with links, the
OpenAPI document, and a readable reference page rendered from that document (one HTML file,
no script and nothing fetched from elsewhere: installs may have no internet)."""

from __future__ import annotations

import functools
import html
import json
from typing import Any

from aiohttp import web

from runtime.api import keys
from runtime.api.models.reference import ApiIndex
from runtime.api.routing import Auth, Route, json_response

PREFIX = "/api/v1"
INDEX = f"{PREFIX}/"
OPENAPI = f"{PREFIX}/openapi.json"
DOCS = f"{PREFIX}/docs"
_METHODS = ("get", "post", "put", "patch", "delete", "options")
_STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 0 auto; max-width: 960px; padding: 1em;
  color: #1d2430; }
h1 { margin-bottom: 0; } h2 { border-bottom: 1px solid #d6dbe3; margin-top: 2em; }
code, pre { font: 13px/1.4 ui-monospace, monospace; }
pre { background: #f4f6f9; padding: .6em; overflow-x: auto; white-space: pre-wrap; }
.op { border: 1px solid #d6dbe3; border-radius: 6px; margin: 1em 0; padding: .2em 1em; }
.method { display: inline-block; min-width: 4.5em; font-weight: 700; }
.get { color: #1463b8; } .post { color: #1a7f37; } .patch { color: #9a6700; }
.delete { color: #b42318; } .put { color: #6e40c9; } .options { color: #57606a; }
table { border-collapse: collapse; } td, th { text-align: left; padding: .2em .8em .2em 0;
  vertical-align: top; }
nav a { margin-right: .8em; }
"""


async def api_index(request: web.Request) -> web.Response:
    settings = request.app[keys.SETTINGS]
    base = settings.public_url.rstrip("/")
    return json_response(
        ApiIndex(
            name="OrbisVoice API",
            version=json.loads(request.app[keys.OPENAPI])["info"]["version"],
            openapi=base + OPENAPI,
            docs=base + DOCS,
            agents=base + f"{PREFIX}/agents",
            widget=base + "/widget.js",
        )
    )


async def api_openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[keys.OPENAPI], content_type="application/json")


async def api_docs(request: web.Request) -> web.Response:
    return web.Response(
        body=render_reference(request.app[keys.OPENAPI]), content_type="text/html", charset="utf-8"
    )


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _anchor(ref: str) -> str:
    name = ref.rsplit("/", 1)[-1]
    return f'<a href="#schema-{_e(name)}">{_e(name)}</a>'


def _schema_summary(schema: dict[str, Any]) -> str:
    """A schema in one line: a link for a $ref, else its type and constraints."""
    if "$ref" in schema:
        return _anchor(schema["$ref"])
    if "anyOf" in schema:
        return " or ".join(_schema_summary(s) for s in schema["anyOf"])
    if schema.get("type") == "array":
        return f"array of {_schema_summary(schema.get('items', {}))}"
    parts = [f"<code>{_e(schema.get('type', 'any'))}</code>"]
    for key in ("format", "enum", "minLength", "maxLength", "minimum", "maximum", "pattern"):
        if key in schema:
            parts.append(f"{key}: <code>{_e(json.dumps(schema[key]))}</code>")
    return ", ".join(parts)


def _operation(path: str, method: str, op: dict[str, Any]) -> str:
    heading = f'<span class="method {method}">{method.upper()}</span> <code>{_e(path)}</code>'
    out = [
        f'<div class="op" id="{_e(op["operationId"])}"><h3>{heading}</h3>',
        f"<p>{_e(op.get('summary', ''))}</p>",
    ]
    if op.get("description"):
        out.append(f"<p>{_e(op['description'])}</p>")
    security = op.get("security", [])
    if security:
        scopes = ", ".join(s for requirement in security for r in requirement.values() for s in r)
        needs = f" (an API key needs the <code>{_e(scopes)}</code> scope)" if scopes else ""
        out.append(f"<p>Authorization: a bearer token{needs}</p>")
    parameters = op.get("parameters", [])
    if parameters:
        rows = "".join(
            f"<tr><td><code>{_e(p['name'])}</code></td><td>{_e(p['in'])}</td>"
            f"<td>{'required' if p.get('required') else ''}</td>"
            f"<td>{_schema_summary(p['schema'])}"
            f"{'<br>' + _e(p['schema']['description']) if 'description' in p['schema'] else ''}"
            "</td></tr>"
            for p in parameters
        )
        out.append(f"<table><tr><th>parameter</th><th>in</th><th></th><th></th></tr>{rows}</table>")
    body = op.get("requestBody")
    if body:
        schema = body["content"]["application/json"]["schema"]
        out.append(f"<p>Body (JSON): {_schema_summary(schema)}</p>")
    responses = []
    for status, response in op.get("responses", {}).items():
        content = response.get("content", {})
        shown = next(iter(content.items()), None)
        kind = ""
        if shown is not None:
            media, spec = shown
            kind = f" <code>{_e(media)}</code> {_schema_summary(spec.get('schema', {}))}"
        responses.append(f"<li><b>{_e(status)}</b>{kind}: {_e(response['description'])}</li>")
    out.append(f"<p>Responses:</p><ul>{''.join(responses)}</ul></div>")
    return "".join(out)


@functools.lru_cache(maxsize=2)
def render_reference(document: bytes) -> bytes:
    """The reference page for one OpenAPI document (rendered once per document)."""
    doc = json.loads(document)
    by_tag: dict[str, list[str]] = {}
    for path, operations in doc["paths"].items():
        for method in _METHODS:
            op = operations.get(method)
            if op is not None and op["tags"][0] not in ("process", "internal"):
                by_tag.setdefault(op["tags"][0], []).append(_operation(path, method, op))
    nav = "".join(f'<a href="#tag-{_e(tag)}">{_e(tag)}</a>' for tag in by_tag)
    sections = "".join(
        f'<h2 id="tag-{_e(tag)}">{_e(tag)}</h2>{"".join(ops)}' for tag, ops in by_tag.items()
    )
    schemas = "".join(
        f'<h3 id="schema-{_e(name)}">{_e(name)}</h3><pre>{_e(json.dumps(s, indent=2))}</pre>'
        for name, s in doc["components"]["schemas"].items()
    )
    info = doc["info"]
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(info["title"])} reference</title><style>{_STYLE}</style></head>
<body><h1>{_e(info["title"])}</h1><p>version {_e(info["version"])} ·
<a href="{OPENAPI}">OpenAPI 3.1 document</a> (for code generators and API clients)</p>
<pre>{_e(info.get("description", ""))}</pre>
<nav>{nav}<a href="#schemas">schemas</a></nav>{sections}
<h2 id="schemas">Schemas</h2>{schemas}</body></html>
"""
    return page.encode()


ROUTES = [
    Route(
        "GET",
        INDEX,
        api_index,
        "Where the API's reference and resources are",
        Auth.NONE,
        "reference",
        {200: ApiIndex},
    ),
    Route(
        "GET",
        OPENAPI,
        api_openapi,
        "This OpenAPI 3.1 document",
        Auth.NONE,
        "reference",
        {200: None},
        raw_content_type="application/json",
    ),
    Route(
        "GET",
        DOCS,
        api_docs,
        "The API reference as a page to read",
        Auth.NONE,
        "reference",
        {200: None},
        raw_content_type="text/html",
    ),
]
