"""The runtime image's Python dependencies: a wheelhouse built on the host with `pip wheel`,
from the OrbisVoice source checkout, for the images' Python."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

import orbisctl
from orbisctl.core.errors import EngineError, UserError
from orbisctl.core.progress import NO_PROGRESS, Progress
from orbisctl.images.steps import cache_dir, hash_inputs, streamed

# The image's Python: host wheels must match it (cp311, manylinux).
IMAGE_PYTHON = (3, 11)
COMPLETE_MARKER = ".complete"
# Each round adds the conditional requirements the previous round's wheels brought in.
_COMPLETION_ROUNDS = 4


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


def project_sources(root: Path) -> dict[str, Path]:
    """What the orbisvoice wheel (and so the runtime image) is built from."""
    names = ("orbisctl", "runtime", "backups", "healthchecks", "templates", "pyproject.toml")
    return {name: root / name for name in names if (root / name).exists()}


def _requirements(root: Path) -> list[str]:
    """The runtime part's requirements: what both parts need plus the `runtime` extra (the
    image carries no typer, rich, jinja2 or docker SDK)."""
    with (root / "pyproject.toml").open("rb") as fh:
        project = tomllib.load(fh)["project"]
    runtime_part = [*project["dependencies"], *project["optional-dependencies"]["runtime"]]
    return sorted(str(dep) for dep in runtime_part)


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


def _pip_line(line: str) -> str | None:
    """pip's lines worth a detail: each requirement it collects and each wheel it builds."""
    if line.startswith(("Collecting ", "Building wheel for ", "Successfully built ")):
        return line
    return None


def _pip_wheel(args: list[str], wheel_dir: Path, what: str, progress: Progress) -> None:
    returncode, output = streamed(
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


def build_wheelhouse(
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
