"""`orbisctl images build | save | load`: the stack's images, built here or carried in."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from orbisctl import images as core
from orbisctl import output, stack
from orbisctl.commands.options import InstallDirOption

app = typer.Typer(help="Build the stack's images, or save/load them for air-gapped hosts.")


def _step(message: str) -> None:
    output.info(f"[dim]·[/] {escape(message)}")


@app.command()
def build(directory: InstallDirOption = Path()) -> None:
    """Build every image (images.source in orbis.yaml); unchanged steps come from the cache."""
    install = stack.open_install(directory)
    started = time.monotonic()
    refs = core.build_all(install.config, _step)
    output.info(
        f"[green]images ready[/] ({install.config.images.source.value} source, "
        f"{time.monotonic() - started:.0f} s): {escape(', '.join(core.all_refs(refs)))}"
    )


@app.command()
def save(
    bundle: Annotated[Path, typer.Argument(help="The file to write (.tar or .tar.gz).")],
    directory: InstallDirOption = Path(),
) -> None:
    """Write every image of the stack into one file, for `images load` on an offline host."""
    install = stack.open_install(directory)
    refs = core.save_bundle(install.config, bundle)
    output.info(f"saved {len(refs)} images to {escape(str(bundle))}")


@app.command()
def load(bundle: Annotated[Path, typer.Argument(help="A file written by `images save`.")]) -> None:
    """Load the images of a bundle written by `orbisctl images save`."""
    loaded = core.load_bundle(bundle)
    output.info(f"loaded {len(loaded)} images: {escape(', '.join(loaded))}")
