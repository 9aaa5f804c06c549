"""Request and response bodies (pydantic), one module per resource as in `handlers/`; the
OpenAPI document is generated from them."""
