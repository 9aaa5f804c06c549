"""A non-editable install carries the templates: build the wheel, render from it alone."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from orbisctl.core.config import OrbisConfig
from orbisctl.render import render_stack

RENDER_FROM_WHEEL = """
import json, orbisctl
from orbisctl.core.config import OrbisConfig
from orbisctl.render import render_stack
from orbisctl.templating import template_root
files = render_stack(OrbisConfig())
print(json.dumps({"package": orbisctl.__file__, "templates": str(template_root()),
                  "files": {str(k): v for k, v in files.items()}}))
"""


@pytest.fixture(scope="module")
def unpacked_wheel(built_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("wheel") / "site"
    with zipfile.ZipFile(built_wheel) as archive:
        archive.extractall(site)
    return site


def test_the_wheel_renders_with_its_own_templates(unpacked_wheel: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-P", "-c", RENDER_FROM_WHEEL],
        env={"PYTHONPATH": str(unpacked_wheel), "PATH": "/usr/bin:/bin"},
        cwd=unpacked_wheel.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rendered = json.loads(result.stdout)
    assert rendered["package"].startswith(str(unpacked_wheel))
    assert rendered["templates"] == str(unpacked_wheel / "orbisctl" / "_templates")
    in_tree = {str(k): v for k, v in render_stack(OrbisConfig()).items()}
    assert rendered["files"] == in_tree
