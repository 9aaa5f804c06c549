"""Building, saving and loading the stack's images.

Two sources (`images.source` in orbis.yaml):

- `registry`: official base images (python:3.11-slim, nginx:alpine, postgres:alpine; redis is
  used as it is) pulled from a registry, plus our runtime, nginx and postgres (with pgBackRest)
  images built on top.
- `local`: nothing is pulled. A Debian base is made with `debootstrap` and `docker import`
  (`base`); PostgreSQL 15, Redis 7, Nginx and Python come from Debian packages inside the
  builds; the Python dependencies come from a wheelhouse built on the host with `pip wheel`
  (`wheelhouse`).

Every step is cached by the hash of its inputs (`steps`): the debootstrap tarball and the
wheelhouse in the cache directory, and each image carries the hash of its inputs in a label,
so a build with nothing changed only hashes files and inspects images. Each image is built
or pulled by `build`; `bundle` carries them all in one file to an air-gapped host.

Here: the stack's images as a whole (which they are, which are missing, all of them built).
"""

from __future__ import annotations

from pathlib import Path

import docker
import docker.errors
import requests.exceptions

import runtime
from orbisctl.core import engine
from orbisctl.core.config import ImageSource, OrbisConfig
from orbisctl.core.progress import NO_PROGRESS, Progress
from orbisctl.images.base import ensure_debian_base
from orbisctl.images.build import (
    REGISTRY_NGINX,
    REGISTRY_POSTGRES,
    REGISTRY_PYTHON,
    BuildSpec,
    build_image,
    pull,
    python_version,
)
from orbisctl.images.steps import hash_inputs
from orbisctl.images.wheelhouse import build_wheelhouse, project_sources, source_root
from orbisctl.render import ImageRefs, image_refs

# hash_inputs, project_sources and source_root are here for tests/e2e (the source key of
# the images a run built); the rest is this module's own.
__all__ = [
    "all_refs",
    "build_all",
    "hash_inputs",
    "missing_images",
    "project_sources",
    "source_root",
]


def all_refs(refs: ImageRefs) -> list[str]:
    return [refs.runtime, refs.nginx, refs.postgres, refs.redis]


def build_all(config: OrbisConfig, *, progress: Progress = NO_PROGRESS) -> ImageRefs:
    """Build (or pull) every image the stack needs; cached steps cost a hash and an inspect."""
    client = engine.connect()
    refs = image_refs(config)
    root = source_root()
    web = Path(runtime.__file__).parent / "web"
    if config.images.source is ImageSource.LOCAL:
        base = ensure_debian_base(client, progress=progress)
        python = f"orbisvoice/python:3.11-{config.images.tag}"
        on_base = {"BASE_IMAGE": base}
        build_image(
            client,
            BuildSpec(python, "local/python.Dockerfile", {}, on_base, base),
            progress=progress,
        )
        services = [
            BuildSpec(refs.postgres, "local/postgres.Dockerfile", {}, on_base, base),
            BuildSpec(refs.redis, "local/redis.Dockerfile", {}, on_base, base),
            BuildSpec(refs.nginx, "local/nginx.Dockerfile", {"web": web}, on_base, base),
        ]
    else:
        python = REGISTRY_PYTHON
        for ref in (REGISTRY_POSTGRES, refs.redis, REGISTRY_PYTHON, REGISTRY_NGINX):
            pull(client, ref, progress)
        services = [
            BuildSpec(
                refs.postgres,
                "postgres.Dockerfile",
                {},
                {"POSTGRES_IMAGE": REGISTRY_POSTGRES},
                REGISTRY_POSTGRES,
            ),
            BuildSpec(
                refs.nginx,
                "nginx.Dockerfile",
                {"web": web},
                {"NGINX_IMAGE": REGISTRY_NGINX},
                REGISTRY_NGINX,
            ),
        ]
    deps, project = build_wheelhouse(root, python_version(client, python), progress=progress)
    wheels = {"wheels/deps": deps, "wheels/project": project}
    services.append(
        BuildSpec(refs.runtime, "runtime.Dockerfile", wheels, {"PYTHON_IMAGE": python}, python)
    )
    for spec in services:
        build_image(client, spec, progress=progress)
    return refs


def missing_images(client: docker.DockerClient, refs: ImageRefs) -> list[str]:
    """The stack's images that are not present on the engine."""
    missing = []
    for ref in all_refs(refs):
        try:
            client.images.get(ref)
        except docker.errors.ImageNotFound:
            missing.append(ref)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise engine.api_error(f"inspecting {ref}", exc) from None
    return missing
