"""Interactive `init` on a real terminal (a pseudo-terminal): it asks what no flag gave."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import yaml

ORBISCTL = Path(sys.executable).parent / "orbisctl"


class Terminal:
    """orbisctl running on a pseudo-terminal; answer each question when it is asked."""

    def __init__(self, *args: str) -> None:
        self.master, slave = pty.openpty()
        env = {**os.environ, "COLUMNS": "200", "TERM": "xterm"}
        env.pop("ORBIS_NON_INTERACTIVE", None)
        self.process = subprocess.Popen(
            [str(ORBISCTL), *args], stdin=slave, stdout=slave, stderr=slave, env=env
        )
        os.close(slave)
        self.seen = ""

    def read_until(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"never asked {text!r}; the terminal shows:\n{self.seen}"
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # the process ended and closed the terminal
                    chunk = b""
                assert chunk, f"orbisctl exited before asking {text!r}:\n{self.seen}"
                self.seen += chunk.decode(errors="replace")

    def answer(self, question: str, reply: str) -> None:
        self.read_until(question)
        self.seen = self.seen.split(question, 1)[1]
        os.write(self.master, reply.encode() + b"\r")

    def finish(self) -> int:
        code = self.process.wait(timeout=60)
        os.close(self.master)
        return code


def test_interactive_init_asks_for_what_no_flag_gave(tmp_path: Path) -> None:
    root = tmp_path / "orbis"
    terminal = Terminal("init", "--dir", str(root), "--https-port", "9443")
    terminal.answer("Domain name of this appliance", "pty.example.com")
    terminal.answer("Speech model", "")  # the default: emulator
    terminal.answer("TLS certificate", "")  # the default: self-signed
    terminal.answer(
        "Web origins allowed to embed the widget", "https://a.example.com, https://b.example.com"
    )
    terminal.read_until("ready:")
    assert terminal.finish() == 0
    config = yaml.safe_load((root / "orbis.yaml").read_text())
    assert config["domain"] == "pty.example.com"
    assert config["model"]["provider"] == "emulator"
    assert config["tls"]["mode"] == "self-signed"
    assert config["ports"]["https"] == 9443  # given by flag, not asked
    assert config["widget"]["allowed_origins"] == ["https://a.example.com", "https://b.example.com"]


def test_non_interactive_flag_never_asks(tmp_path: Path) -> None:
    root = tmp_path / "orbis"
    terminal = Terminal("init", "--dir", str(root), "--non-interactive")
    terminal.read_until("ready:")
    assert terminal.finish() == 0
    assert "Domain name" not in terminal.seen
