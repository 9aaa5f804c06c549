"""Every image of the stack in one file, saved on a host that has them and loaded on an
air-gapped one."""

from __future__ import annotations

import subprocess
from pathlib import Path

from orbisctl.core import engine
from orbisctl.core.config import OrbisConfig
from orbisctl.core.errors import EngineError, UserError
from orbisctl.images import all_refs, missing_images
from orbisctl.render import image_refs


def save_bundle(config: OrbisConfig, output: Path) -> list[str]:
    """Write every image of the stack into one tar (gzip when the name ends in .gz)."""
    client = engine.connect()
    refs = all_refs(image_refs(config))
    absent = missing_images(client, image_refs(config))
    if absent:
        raise UserError(
            f"cannot save: image(s) {', '.join(absent)} not present",
            hint="run `orbisctl images build` first",
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    command = [engine.docker_cli(), "save", *refs]
    with partial.open("wb") as sink:
        if output.suffix == ".gz":
            save = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            gzip = subprocess.run(["gzip", "-1"], stdin=save.stdout, stdout=sink, check=False)
            assert save.stdout is not None and save.stderr is not None
            save.stdout.close()
            error = save.stderr.read().decode("utf-8", "replace")
            code = save.wait() or gzip.returncode
        else:
            result = subprocess.run(command, stdout=sink, stderr=subprocess.PIPE, check=False)
            error, code = result.stderr.decode("utf-8", "replace"), result.returncode
    if code != 0:
        partial.unlink(missing_ok=True)
        raise EngineError(
            f"docker save failed: {error.strip().splitlines()[-1] if error.strip() else code}"
        )
    partial.replace(output)
    return refs


def load_bundle(bundle: Path) -> list[str]:
    """Load a bundle written by `save_bundle`; returns the loaded image names."""
    if not bundle.is_file():
        raise UserError(
            f"{bundle} does not exist", hint="pass the file `orbisctl images save` wrote"
        )
    engine.connect()
    result = subprocess.run(
        [engine.docker_cli(), "load", "--input", str(bundle)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise EngineError(
            f"docker load failed: {result.stderr.strip().splitlines()[-1] if result.stderr.strip() else result.returncode}"
        )
    return [
        line.split(":", 1)[1].strip()
        for line in result.stdout.splitlines()
        if line.startswith("Loaded image:")
    ]
