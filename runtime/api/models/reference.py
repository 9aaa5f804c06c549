"""The API's index: where its document, reference and widget are."""

from __future__ import annotations

from pydantic import Field

from runtime.api.models.base import Out


class ApiIndex(Out):
    name: str
    version: str
    openapi: str = Field(description="the OpenAPI 3.1 document")
    docs: str = Field(description="the reference, as a page to read")
    agents: str = Field(description="the agents resource (each agent has its embed snippet)")
    widget: str = Field(description="the widget script the embed snippets load")
