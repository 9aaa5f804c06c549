"""The one jinja environment: StrictUndefined, templates from the package or the source tree.

A wheel carries the top-level `templates/` folder as `orbisctl/_templates` (hatch
force-include); an editable install or a checkout reads `templates/` beside the package.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jinja2

_PACKAGE_DIR = Path(__file__).resolve().parent


def template_root() -> Path:
    """The folder holding `compose/` and `nginx/` templates."""
    packaged = _PACKAGE_DIR / "_templates"
    if packaged.is_dir():
        return packaged
    source_tree = _PACKAGE_DIR.parent / "templates"
    if source_tree.is_dir():
        return source_tree
    raise RuntimeError(f"orbisctl templates are missing (looked in {packaged} and {source_tree})")


@functools.cache
def environment() -> jinja2.Environment:
    """The jinja environment every rendered file goes through.

    StrictUndefined turns a misspelt variable into an error instead of an empty string, which
    would otherwise silently render a broken config. Autoescape is off: the outputs are YAML
    and nginx config, not HTML; values that reach them are validated by the config model.
    """
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(template_root()),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - renders YAML and nginx config, never HTML
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
