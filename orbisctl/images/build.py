"""One image: built from one of the templates' Dockerfiles unless an image of the same inputs
is there, or pulled from a registry when absent."""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
import requests.exceptions

import orbisctl
from orbisctl import image_digests
from orbisctl.core import engine
from orbisctl.core.errors import EngineError
from orbisctl.core.progress import NO_PROGRESS, Progress
from orbisctl.images.steps import INPUTS_LABEL, VERSION_LABEL, hash_inputs, labelled

log = logging.getLogger(__name__)

# Base images of the registry source.
REGISTRY_PYTHON = image_digests.pinned("python")
REGISTRY_NGINX = image_digests.pinned("nginx")
REGISTRY_POSTGRES = image_digests.pinned("postgres")
# A step of the classic builder's output (`Step 3/9 : RUN apt-get install …`): one detail each.
_BUILD_STEP = re.compile(r"^Step \d+/\d+ : ")


def templates_dir() -> Path:
    """The templates: shipped in the wheel as orbisctl/_templates, or a checkout's templates/."""
    shipped = Path(orbisctl.__file__).parent / "_templates"
    return shipped if shipped.is_dir() else Path(orbisctl.__file__).parent.parent / "templates"


def _image_id(client: docker.DockerClient, ref: str) -> str:
    try:
        return str(client.images.get(ref).id)
    except docker.errors.ImageNotFound:
        return f"unresolved:{ref}"  # a registry base: `pull` resolves it during the build
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise engine.api_error(f"inspecting {ref}", exc) from None


@dataclass(frozen=True)
class BuildSpec:
    ref: str
    dockerfile: str  # relative to templates/images
    context: Mapping[str, Path] = field(default_factory=dict)  # name in context -> file or dir
    build_args: Mapping[str, str] = field(default_factory=dict)
    parent: str | None = None  # the FROM image, whose ID is part of the cache key


def build_image(
    client: docker.DockerClient, spec: BuildSpec, *, progress: Progress = NO_PROGRESS
) -> str:
    """Build one image unless an image with the same inputs exists; returns how it went."""
    dockerfile = templates_dir() / "images" / spec.dockerfile
    parent_id = _image_id(client, spec.parent) if spec.parent else ""
    trees = {"Dockerfile": dockerfile, **spec.context}
    text = dockerfile.read_text(encoding="utf-8")
    siblings = sorted(p for p in dockerfile.parent.glob("*.sh") if p.name in text)
    trees |= {f"script:{p.name}": p for p in siblings}
    key = hash_inputs(
        [
            spec.ref,
            parent_id,
            orbisctl.__version__,
            *sorted(f"{k}={v}" for k, v in spec.build_args.items()),
        ],
        trees,
    )
    if labelled(client, spec.ref) == key:
        progress.note(f"{spec.ref}: cached")
        return "cached"
    progress.step(f"{spec.ref}: building")
    with tempfile.TemporaryDirectory(prefix="orbis-build-") as work:
        context = Path(work)
        shutil.copyfile(dockerfile, context / "Dockerfile")
        for script in siblings:
            shutil.copy2(script, context / script.name)
        for name, source in spec.context.items():
            if source.is_dir():
                shutil.copytree(
                    source, context / name, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                (context / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, context / name)
        try:
            stream = client.api.build(
                path=str(context),
                tag=spec.ref,
                buildargs=dict(spec.build_args),
                labels={INPUTS_LABEL: key, VERSION_LABEL: orbisctl.__version__},
                rm=True,
                forcerm=True,
                decode=True,
            )
            for line in engine.stream_json(stream):
                log.debug("%s", line)
                if _BUILD_STEP.match(line):
                    progress.detail(line.strip())
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise engine.api_error(f"building {spec.ref}", exc) from None
    return "built"


def pull(client: docker.DockerClient, ref: str, progress: Progress) -> None:
    """Pull `ref` unless the engine has it."""
    try:
        client.images.get(ref)
        progress.note(f"{ref}: present")
        return
    except docker.errors.ImageNotFound:
        pass
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise engine.api_error(f"inspecting {ref}", exc) from None
    progress.step(f"{ref}: pulling")
    name, _, digest = ref.partition("@")
    repository, _, tag = name.partition(":")
    try:
        # The engine takes a digest in place of the tag (`name:tag@digest` is not a tag).
        client.images.pull(repository, tag=digest or tag or "latest")
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise EngineError(
            f"cannot pull {ref}: {engine._reason(exc)}",
            hint="with no registry in reach set `images.source: local` in orbis.yaml, "
            "then run `orbisctl images build`",
        ) from None


def python_version(client: docker.DockerClient, image: str) -> str:
    """The full Python version inside an image (`3.11.2`)."""
    try:
        output = client.containers.run(
            image,
            ["python3", "-c", "import platform; print(platform.python_version())"],
            remove=True,
            network_disabled=True,
        )
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise engine.api_error(f"asking {image} for its Python version", exc) from None
    return bytes(output).decode().strip()
