"""The API's front door under /api/v1/: the index, the OpenAPI document and the reference
page (what `orbisctl up` prints as the API URL; routed by nginx, see tests/web/test_api_urls.py)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest

from runtime.api import keys
from tests.api.fixtures import ApiHarness

pytestmark = pytest.mark.integration


async def test_the_api_url_answers_an_index_of_links(api: ApiHarness) -> None:
    _, index = await api.call("GET", "/api/v1/", expect=200)
    assert index["openapi"] == "https://voice.test/api/v1/openapi.json"
    assert index["docs"] == "https://voice.test/api/v1/docs"
    assert index["agents"] == "https://voice.test/api/v1/agents"
    assert index["widget"] == "https://voice.test/widget.js"


async def test_the_openapi_document_is_served_under_the_api_prefix(api: ApiHarness) -> None:
    async with api.http.get(api.url + "/api/v1/openapi.json") as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        assert await response.read() == api.app[keys.OPENAPI]


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.external: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(str(values["id"]))
        if tag == "script":
            self.scripts += 1
        for name in ("href", "src"):
            value = values.get(name)
            if value:
                self.hrefs.append(value)
                if re.match(r"^(https?:)?//", value):
                    self.external.append(value)


async def test_the_reference_page_lists_every_tenant_operation_self_contained(
    api: ApiHarness,
) -> None:
    async with api.http.get(api.url + "/api/v1/docs") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        text = await response.text()
    page = _Page()
    page.feed(text)
    # Nothing from elsewhere (installs may have no internet) and no script for the CSP.
    assert page.external == [] and page.scripts == 0
    document = json.loads(api.app[keys.OPENAPI])
    tenant_operations = {
        op["operationId"]
        for operations in document["paths"].values()
        for op in operations.values()
        if op["tags"][0] not in ("process", "internal")
    }
    assert "create_agent" in tenant_operations
    assert tenant_operations <= page.ids
    # Every in-page link lands on something the page has.
    anchors = {href[1:] for href in page.hrefs if href.startswith("#")}
    assert anchors and anchors <= page.ids
    assert "/api/v1/openapi.json" in page.hrefs
    assert "embed_snippet" in text
