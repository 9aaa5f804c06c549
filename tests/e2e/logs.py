"""Every container's log of a test stack, kept while the test runs. Replicas that a roll
removes take their logs with them (`docker compose logs` no longer has them), and those are
the ones that say why a moved call failed."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Self

from orbisctl.core import engine

POLL_SECONDS = 1.0
# Log lines worth showing when a test fails: the services' warnings and errors, nginx's errors.
NOTABLE = ('"level": "warning"', '"level": "error"', "[error]", "[crit]", "[alert]")


class ServiceLogs:
    """`docker logs --follow` of each container of `project` as it appears, into `directory`."""

    def __init__(self, project: str, directory: Path) -> None:
        self.project = project
        self.directory = directory
        self._followers: dict[str, subprocess.Popen[bytes]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        client = engine.connect()
        while not self._stop.is_set():
            for container in engine.project_containers(client, self.project):
                if container.name not in self._followers:
                    with (self.directory / f"{container.name}.log").open("wb") as sink:
                        self._followers[container.name] = subprocess.Popen(
                            ["docker", "logs", "--follow", "--timestamps", container.name],
                            stdout=sink,
                            stderr=subprocess.STDOUT,
                        )
            self._stop.wait(POLL_SECONDS)

    def notable(self, limit: int = 60) -> str:
        """The last `limit` warnings and errors of every container, oldest first."""
        lines = [
            line
            for path in sorted(self.directory.glob("*.log"))
            for line in path.read_text(errors="replace").splitlines()
            if any(marker in line for marker in NOTABLE)
        ]
        lines.sort()  # each line starts with its timestamp
        return "\n".join(lines[-limit:])

    def __enter__(self) -> Self:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for follower in self._followers.values():
            follower.terminate()
            follower.wait(timeout=10)
