"""`orbisctl images build | save | load`: the stack's images, built here or carried in."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from orbisctl import output
from orbisctl.commands.options import InstallDirOption
from orbisctl.core.config import (
    CONFIG_FILENAME,
    ImageSource,
    OrbisConfig,
    load_config,
    parse_config,
)
from orbisctl.images import all_refs, build_all
from orbisctl.images.bundle import load_bundle, save_bundle

app = typer.Typer(help="Build the stack's images, or save/load them for air-gapped hosts.")


SourceOption = Annotated[
    ImageSource | None,
    typer.Option("--source", help="registry or local; default: images.source in orbis.yaml."),
]
TagOption = Annotated[
    str | None, typer.Option("--tag", help="Image tag; default: images.tag in orbis.yaml.")
]


def _config(directory: Path, source: ImageSource | None, tag: str | None) -> OrbisConfig:
    """The install's config, or the defaults where there is no install (a build host)."""
    path = directory / CONFIG_FILENAME
    config = load_config(path) if path.is_file() else OrbisConfig()
    images = config.images.model_dump()
    images |= {k: v for k, v in {"source": source, "tag": tag}.items() if v is not None}
    return parse_config({**config.model_dump(mode="json"), "images": images})


@app.command()
def build(
    directory: InstallDirOption = Path(),
    source: SourceOption = None,
    tag: TagOption = None,
) -> None:
    """Build every image the stack needs; unchanged steps come from the cache."""
    config = _config(directory, source, tag)
    started = time.monotonic()
    with output.StepReporter() as progress:
        refs = build_all(config, progress=progress)
    output.info(
        f"[green]images ready[/] ({config.images.source.value} source, "
        f"{time.monotonic() - started:.0f} s): {escape(', '.join(all_refs(refs)))}"
    )


@app.command()
def save(
    bundle: Annotated[Path, typer.Argument(help="The file to write (.tar or .tar.gz).")],
    directory: InstallDirOption = Path(),
    source: SourceOption = None,
    tag: TagOption = None,
) -> None:
    """Write every image of the stack into one file, for `images load` on an offline host."""
    refs = save_bundle(_config(directory, source, tag), bundle)
    output.info(f"saved {len(refs)} images to {escape(str(bundle))}")


@app.command()
def load(bundle: Annotated[Path, typer.Argument(help="A file written by `images save`.")]) -> None:
    """Load the images of a bundle written by `orbisctl images save`."""
    loaded = load_bundle(bundle)
    output.info(f"loaded {len(loaded)} images: {escape(', '.join(loaded))}")
