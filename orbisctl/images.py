"""Building, saving and loading the stack's images.

Two sources (`images.source` in orbis.yaml):

- `registry`: official base images (python:3.11-slim, nginx:alpine, postgres:alpine; redis is
  used as it is) pulled from a registry, plus our runtime, nginx and postgres (with pgBackRest)
  images built on top.
- `local`: nothing is pulled. A Debian base is made with `debootstrap` and `docker import`;
  PostgreSQL 15, Redis 7, Nginx and Python come from Debian packages inside the builds; the
  Python dependencies come from a wheelhouse built on the host with `pip wheel`.

Every step is cached by the hash of its inputs: the debootstrap tarball and the wheelhouse in
the cache directory, and each image carries the hash of its inputs in a label, so a build with
nothing changed only hashes files and inspects images.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
import requests.exceptions
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

import orbisctl
import runtime
from orbisctl import image_digests
from orbisctl.core import engine
from orbisctl.core.config import ImageSource, OrbisConfig
from orbisctl.core.errors import EngineError, UserError
from orbisctl.core.progress import NO_PROGRESS, Progress
from orbisctl.render import ImageRefs, image_refs

log = logging.getLogger(__name__)

INPUTS_LABEL = "org.orbisvoice.inputs"
# The release an image was built from (`orbisctl version` reads it); part of the inputs, so a
# new release relabels every image it builds.
VERSION_LABEL = "org.opencontainers.image.version"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("ORBIS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBIAN_SECURITY_MIRROR = os.environ.get(
    "ORBIS_DEBIAN_SECURITY_MIRROR", "http://deb.debian.org/debian-security"
)
# Base images of the registry source.
REGISTRY_PYTHON = image_digests.pinned("python")
REGISTRY_NGINX = image_digests.pinned("nginx")
REGISTRY_POSTGRES = image_digests.pinned("postgres")
# The image's Python: host wheels must match it (cp311, manylinux).
IMAGE_PYTHON = (3, 11)
# Files written into the debootstrap tree before `docker import`; part of the base's cache key.
_BASE_FILES: dict[str, tuple[str, int]] = {
    "etc/apt/sources.list": (
        (
            f"deb {DEBIAN_MIRROR} {DEBIAN_SUITE} main\n"
            f"deb {DEBIAN_MIRROR} {DEBIAN_SUITE}-updates main\n"
            f"deb {DEBIAN_SECURITY_MIRROR} {DEBIAN_SUITE}-security main\n"
        ),
        0o644,
    ),
    # Small images: no recommends, no docs or man pages, no translations.
    "etc/apt/apt.conf.d/90orbis": (
        'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\nAcquire::Languages "none";\n',
        0o644,
    ),
    "etc/dpkg/dpkg.cfg.d/90orbis-nodoc": (
        (
            "path-exclude=/usr/share/doc/*\npath-include=/usr/share/doc/*/copyright\n"
            "path-exclude=/usr/share/man/*\npath-exclude=/usr/share/info/*\n"
            "path-exclude=/usr/share/locale/*\n"
        ),
        0o644,
    ),
    # Package installs inside image builds must not try to start services.
    "usr/sbin/policy-rc.d": ("#!/bin/sh\nexit 101\n", 0o755),
}
_BASE_CHANGES = ["ENV LANG=C.UTF-8", 'CMD ["bash"]']
# A step of the classic builder's output (`Step 3/9 : RUN apt-get install …`): one detail each.
_BUILD_STEP = re.compile(r"^Step \d+/\d+ : ")

# --- locations -------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where debootstrap tarballs and wheelhouses are kept between builds."""
    configured = os.environ.get("ORBIS_CACHE_DIR")
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "orbisvoice"


def templates_dir() -> Path:
    """The templates: shipped in the wheel as orbisctl/_templates, or a checkout's templates/."""
    shipped = Path(orbisctl.__file__).parent / "_templates"
    return shipped if shipped.is_dir() else Path(orbisctl.__file__).parent.parent / "templates"


def source_root() -> Path:
    """The OrbisVoice source tree the runtime wheel is built from (a checkout)."""
    root = Path(orbisctl.__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or 'name = "orbisvoice"' not in pyproject.read_text("utf-8"):
        raise UserError(
            "building images needs the OrbisVoice source checkout, and orbisctl is not run from one",
            hint="run orbisctl from a checkout's virtualenv, or `orbisctl images load` a bundle",
        )
    return root


# --- image references --------------------------------------------------------------------------


def all_refs(refs: ImageRefs) -> list[str]:
    return [refs.runtime, refs.nginx, refs.postgres, refs.redis]


# --- hashing ---------------------------------------------------------------------------------


def _files_under(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )


def hash_inputs(parts: Iterable[str], trees: Mapping[str, Path] | None = None) -> str:
    """sha256 over text parts and the names and bytes of every file in `trees`."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() + b"\0")
    for name, root in sorted((trees or {}).items()):
        for path in _files_under(root):
            rel = path.relative_to(root) if root.is_dir() else Path(path.name)
            digest.update(f"{name}/{rel}\0{path.stat().st_mode & 0o111}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


# --- the Debian base (debootstrap + docker import) ------------------------------------------


def _debootstrap(tarball: Path, progress: Progress) -> None:
    progress.step(f"debootstrap {DEBIAN_SUITE} from {DEBIAN_MIRROR}")
    if shutil.which("debootstrap") is None:
        raise UserError(
            "debootstrap is not installed (needed for images.source: local)",
            hint="apt-get install debootstrap",
        )
    if os.geteuid() != 0:
        raise UserError("debootstrap needs root", hint="run `orbisctl images build` as root")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tarball.parent, prefix="debootstrap-") as work:
        root = Path(work) / "root"
        returncode, lines = _streamed(
            ["debootstrap", "--variant=minbase", DEBIAN_SUITE, str(root), DEBIAN_MIRROR],
            progress,
            _PhaseFilter(),
        )
        if returncode != 0:
            lines = lines or ["no output"]
            raise EngineError(
                f"debootstrap failed: {lines[-1]}",
                hint=f"check that {DEBIAN_MIRROR} is reachable (ORBIS_DEBIAN_MIRROR picks another)",
            )
        for rel, (text, mode) in _BASE_FILES.items():
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            target.chmod(mode)
        for junk in ("var/lib/apt/lists", "var/cache/apt/archives", "var/log"):
            for path in (root / junk).glob("*"):
                if path.is_file():
                    path.unlink()
        partial = Path(work) / "base.tar"
        progress.detail("tar of the base tree")
        subprocess.run(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(partial), "."],
            check=True,
            capture_output=True,
        )
        partial.replace(tarball)


def ensure_debian_base(client: docker.DockerClient, *, progress: Progress = NO_PROGRESS) -> str:
    """The local Debian base image (from a cached debootstrap tarball); returns its ref."""
    key = hash_inputs(
        [DEBIAN_SUITE, DEBIAN_MIRROR, "minbase", *_BASE_CHANGES]
        + [f"{rel}\0{text}\0{mode}" for rel, (text, mode) in sorted(_BASE_FILES.items())]
    )
    ref = f"orbisvoice/debian:{DEBIAN_SUITE}-{key[:12]}"
    if _labelled(client, ref) == key:
        progress.note(f"{ref}: cached")
        return ref
    tarball = cache_dir() / "debian" / f"{DEBIAN_SUITE}-{key[:16]}.tar"
    if not tarball.is_file():
        _debootstrap(tarball, progress)
    progress.step(f"{ref}: docker import")
    repository, tag = ref.split(":")
    try:
        client.api.import_image_from_file(
            str(tarball),
            repository=repository,
            tag=tag,
            changes=[*_BASE_CHANGES, f"LABEL {INPUTS_LABEL}={key}"],
        )
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise engine.api_error(f"docker import of {tarball}", exc) from None
    return ref


# --- the wheelhouse --------------------------------------------------------------------------


def _requirements(root: Path) -> list[str]:
    """The runtime part's requirements: what both parts need plus the `runtime` extra (the
    image carries no typer, rich, jinja2 or docker SDK)."""
    with (root / "pyproject.toml").open("rb") as fh:
        project = tomllib.load(fh)["project"]
    runtime_part = [*project["dependencies"], *project["optional-dependencies"]["runtime"]]
    return sorted(str(dep) for dep in runtime_part)


COMPLETE_MARKER = ".complete"
# Each round adds the conditional requirements the previous round's wheels brought in.
_COMPLETION_ROUNDS = 4


@contextmanager
def _staging(target: Path) -> Iterator[Path]:
    """A directory that becomes `target` (marked complete) only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        yield partial
        (partial / COMPLETE_MARKER).write_text("", encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        partial.replace(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _streamed(
    argv: list[str], progress: Progress, shown: Callable[[str], str | None]
) -> tuple[int, list[str]]:
    """Run `argv`, reporting as details the output lines `shown` picks (it returns the text
    to show, or None); returns the exit code and every non-empty output line."""
    lines: list[str] = []
    with subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as process:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip()
            if not line:
                continue
            lines.append(line)
            text = shown(line)
            if text is not None:
                progress.detail(text)
    return process.returncode, lines


class _PhaseFilter:
    """debootstrap prints a line per package per phase (`I: Retrieving adduser`, …
    `I: Validating adduser`, …): the first line of each phase is shown."""

    def __init__(self) -> None:
        self._phase = ""

    def __call__(self, line: str) -> str | None:
        if not line.startswith(("I: ", "W: ", "E: ")):
            return None
        phase = line.split(" ", 2)[1]
        if phase == self._phase and line.startswith("I: "):
            return None
        self._phase = phase
        return line


def _pip_line(line: str) -> str | None:
    """pip's lines worth a detail: each requirement it collects and each wheel it builds."""
    if line.startswith(("Collecting ", "Building wheel for ", "Successfully built ")):
        return line
    return None


def _pip_wheel(args: list[str], wheel_dir: Path, what: str, progress: Progress) -> None:
    returncode, output = _streamed(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--progress-bar",
            "off",
            "--wheel-dir",
            str(wheel_dir),
            *args,
        ],
        progress,
        _pip_line,
    )
    if returncode != 0:
        lines = [line for line in output if line.startswith("ERROR")]
        lines = lines or output or ["no output"]
        raise EngineError(
            f"pip wheel ({what}) failed: {lines[-1]}",
            hint="the wheelhouse is built on this host: check that PyPI is reachable",
        )


def _missing_requirements(wheels: Path, environment: dict[str, str]) -> list[str]:
    """Requirements of the wheels in `wheels`, for the target interpreter described by
    `environment` (PEP 508 marker variables), that no wheel there satisfies."""
    available: dict[str, list[Version]] = {}
    metadata: list[list[str]] = []
    for wheel in wheels.glob("*.whl"):
        name, version = parse_wheel_filename(wheel.name)[:2]
        available.setdefault(canonicalize_name(name), []).append(version)
        with zipfile.ZipFile(wheel) as archive:
            meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            text = archive.read(meta).decode("utf-8", "replace")
        metadata.append(
            [
                line[len("Requires-Dist:") :].strip()
                for line in text.splitlines()
                if line.startswith("Requires-Dist:")
            ]
        )
    missing = set()
    for requirements in metadata:
        for line in requirements:
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate(
                {**environment, "extra": ""}
            ):
                continue
            versions = available.get(canonicalize_name(requirement.name), [])
            if not any(requirement.specifier.contains(v, prereleases=True) for v in versions):
                missing.add(f"{requirement.name}{requirement.specifier}")
    return sorted(missing)


def _target_environment(python_version: str) -> dict[str, str]:
    env = {key: str(value) for key, value in default_environment().items()}
    env |= {
        "python_full_version": python_version,
        "python_version": ".".join(python_version.split(".")[:2]),
        "implementation_version": python_version,
    }
    return env


def project_sources(root: Path) -> dict[str, Path]:
    """What the orbisvoice wheel (and so the runtime image) is built from."""
    names = ("orbisctl", "runtime", "backups", "healthchecks", "templates", "pyproject.toml")
    return {name: root / name for name in names if (root / name).exists()}


def wheelhouse(
    root: Path, target_python: str, *, progress: Progress = NO_PROGRESS
) -> tuple[Path, Path]:
    """(dependency wheels, project wheel) directories in the cache, built when missing.

    The host resolves the dependencies for itself; conditional requirements that hold only
    for the image's Python (`target_python`, e.g. Debian's 3.11.2, which still needs
    async-timeout) are then added until every wheel's requirements are met.
    """
    if sys.version_info[:2] != IMAGE_PYTHON or not target_python.startswith("3.11."):
        wanted = ".".join(map(str, IMAGE_PYTHON))
        raise UserError(
            f"the wheelhouse must be built by Python {wanted} (the images' Python), "
            f"not {sys.version_info.major}.{sys.version_info.minor}",
            hint=f"run orbisctl from a Python {wanted} virtualenv",
        )
    requirements = _requirements(root)
    platform_tag = f"cp311-{sys.platform}-{os.uname().machine}-{target_python}"
    deps_key = hash_inputs([platform_tag, *requirements])
    deps = cache_dir() / "wheelhouse" / f"deps-{deps_key[:16]}"
    if (deps / COMPLETE_MARKER).is_file():
        progress.note(f"dependency wheels: cached ({deps.name})")
    else:
        progress.step("dependency wheels: pip wheel")
        _build_deps(requirements, deps, _target_environment(target_python), progress)
    project_key = hash_inputs([platform_tag], project_sources(root))
    project = cache_dir() / "wheelhouse" / f"project-{project_key[:16]}"
    if (project / COMPLETE_MARKER).is_file():
        progress.note(f"orbisvoice wheel: cached ({project.name})")
    else:
        progress.step("orbisvoice wheel: pip wheel --no-deps")
        with _staging(project) as partial:
            _pip_wheel(["--no-deps", str(root)], partial, "orbisvoice", progress)
    return deps, project


def _build_deps(
    requirements: list[str], deps: Path, environment: dict[str, str], progress: Progress
) -> None:
    with _staging(deps) as partial:
        listing = partial / "requirements.txt"
        listing.write_text("\n".join(requirements) + "\n", encoding="utf-8")
        _pip_wheel(["-r", str(listing)], partial, "dependencies", progress)
        for _ in range(_COMPLETION_ROUNDS):
            missing = _missing_requirements(partial, environment)
            if not missing:
                return
            _pip_wheel(missing, partial, "dependencies of the image's Python", progress)
        raise EngineError(
            "the wheelhouse is still missing requirements after "
            f"{_COMPLETION_ROUNDS} rounds: {', '.join(_missing_requirements(partial, environment))}"
        )


# --- docker builds ---------------------------------------------------------------------------


def _labelled(client: docker.DockerClient, ref: str) -> str | None:
    """The inputs label of a local image, None when the image is absent."""
    try:
        image = client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise engine.api_error(f"inspecting {ref}", exc) from None
    labels: dict[str, str] = image.labels or {}
    return labels.get(INPUTS_LABEL)


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
    if _labelled(client, spec.ref) == key:
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


def _pull(client: docker.DockerClient, ref: str, progress: Progress) -> None:
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


def _python_version(client: docker.DockerClient, image: str) -> str:
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
            _pull(client, ref, progress)
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
    deps, project = wheelhouse(root, _python_version(client, python), progress=progress)
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


# --- bundles for air-gapped hosts -------------------------------------------------------------


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
