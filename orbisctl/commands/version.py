"""`orbisctl version`: this orbisctl, each service's image, the database's schema and server."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from orbisctl import output, versions
from orbisctl.commands.options import InstallDirOption, JsonOption
from orbisctl.core.config import CONFIG_FILENAME
from orbisctl.core.install import open_install

app = typer.Typer()

_SHORT_ID = 12  # hex digits of an image id, as `docker images` shows them


def _short(image_id: str | None) -> str:
    if image_id is None:
        return "[red]absent[/]"
    return image_id.removeprefix("sha256:")[:_SHORT_ID]


def _images_table(rows: list[versions.ImageVersion]) -> Table:
    table = Table(title="images", title_justify="left")
    for column in ("service", "version", "image", "id", "digest", "containers"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(
            row.service,
            escape(row.version or "-"),
            escape(row.ref),
            _short(row.image_id),
            escape(row.digest or "-"),
            str(row.containers) if row.containers else "-",
        )
    return table


@app.command()
def version(directory: InstallDirOption = Path(), as_json: JsonOption = False) -> None:
    """Versions of this orbisctl, each service's image and digest, the schema and PostgreSQL.

    With the stack down, the configured images; every mismatch is a warning saying what to do.
    """
    install = open_install(directory) if (directory / CONFIG_FILENAME).is_file() else None
    found = versions.installed_versions(install)
    if as_json:
        output.print_json(found.as_json())
        return
    output.console.print(f"orbisctl {found.cli} (schema {found.code_schema})")
    if found.database is not None:
        database = found.database
        schema = "not migrated" if database.schema is None else f"schema {database.schema}"
        output.console.print(f"database: PostgreSQL {database.postgres}, {schema}")
    if found.images:
        output.print_table(_images_table(found.images))
    for note in found.notes:
        output.warn(note)
