"""Judge the rendered nginx with sslyze's Mozilla intermediate check; print what it said.

Run inside a private mount and network namespace, like nginx_probe.py: the install's rendered
nginx config and certificate run unchanged on the container's fixed HTTPS port, and sslyze
(the PyPI package, run as this Python's `-m sslyze`) scans it with the install CA as the
trust store (`--certinfo_ca_file`), as a browser that trusts the install CA would.

Usage: python -m tests.install.sslyze_probe INSTALL_DIR WORK_DIR DOMAIN
Prints {"returncode": ..., "output": ..., "json": ...} as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from orbisctl.render import NGINX_HTTPS_PORT
from tests.install.helpers import SERVICE_NAMES
from tests.install.nginx_probe import running_nginx


def main(install: Path, work: Path, domain: str) -> dict[str, Any]:
    report = work / "sslyze.json"
    with running_nginx(install, work, f"127.0.0.1 localhost {domain} {SERVICE_NAMES}\n"):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "sslyze",
                "--mozilla_config=intermediate",
                f"--certinfo_ca_file={install / 'tls' / 'ca.crt'}",
                f"--json_out={report}",
                f"{domain}:{NGINX_HTTPS_PORT}",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    return {
        "returncode": result.returncode,
        "output": result.stdout + result.stderr,
        "json": json.loads(report.read_text()) if report.is_file() else None,
    }


if __name__ == "__main__":
    install_dir, work_dir, domain_name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    print(json.dumps(main(install_dir, work_dir, domain_name)))
