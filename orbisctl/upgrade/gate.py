"""The upgrade's health gate as a tenant sees it: a real login, an agent read and a call
through the model (the emulator or Gemini), run in an api container by the drill's probe.

The gate logs in as its own probe tenant, never a customer: the first gate that needs one
signs it up through the API and keeps its login in `secrets/gate_probe.json` (0600, escrowed
with the other secrets by backups). A database restored from before that tenant existed no
longer knows it: a login refused to a kept probe enrolls a new one and checks again, so only a
release that refuses a fresh tenant's login fails the gate.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass
from typing import Any

from backups.drill import run_probe
from orbisctl.core.errors import InstallDirError
from orbisctl.core.fsutil import atomic_write
from orbisctl.core.install import Install
from orbisctl.core.secretfiles import GATE_PROBE

# The probe agent's allowed origin: a reserved name (RFC 2606), never a real site.
PROBE_ORIGIN = "https://gate-probe.example.com"
LOGIN_CHECK = "api login"

Check = dict[str, Any]


@dataclass(frozen=True)
class ProbeTenant:
    org_name: str
    email: str
    password: str
    agent_name: str
    origin: str
    agent_id: str
    public_id: str

    def check_params(self) -> dict[str, Any]:
        return {
            "mode": "check",
            "email": self.email,
            "password": self.password,
            "agent_id": self.agent_id,
            "agent_name": self.agent_name,
            "public_id": self.public_id,
            "origin": self.origin,
            "call": True,
        }


def kept_probe(install: Install) -> ProbeTenant | None:
    """The probe tenant an earlier gate enrolled, if its file is there and whole."""
    path = install.secret(GATE_PROBE)
    try:
        return ProbeTenant(**json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise InstallDirError(
            f"{path} is unreadable ({exc})",
            hint="remove it: the next gate enrolls a new probe tenant",
        ) from None


def enroll(install: Install) -> ProbeTenant:
    """Sign a new probe tenant up through the API and keep its login."""
    token = secrets.token_hex(6)
    wanted = {
        "org_name": "orbisctl upgrade gate",
        "email": f"gate-probe-{token}@example.com",
        "password": secrets.token_urlsafe(24),
        "agent_name": f"upgrade gate probe {token}",
        "origin": PROBE_ORIGIN,
    }
    made = run_probe(install.compose(), {"mode": "enroll", **wanted})
    probe = ProbeTenant(**wanted, agent_id=str(made["agent_id"]), public_id=str(made["public_id"]))
    atomic_write(install.secret(GATE_PROBE), json.dumps(asdict(probe)).encode(), mode=0o600)
    return probe


def _login_refused(checks: list[Check]) -> bool:
    return any(c["name"] == LOGIN_CHECK and not c["ok"] and "401" in c["detail"] for c in checks)


def tenant_checks(install: Install) -> list[Check]:
    """Readiness, login, agent read and a call, as the probe tenant; each a result
    (`name`, `ok`, `detail`, `seconds`)."""
    kept = kept_probe(install)
    probe = kept or enroll(install)
    checks: list[Check] = run_probe(install.compose(), probe.check_params()).get("checks", [])
    if kept is not None and _login_refused(checks):
        checks = run_probe(install.compose(), enroll(install).check_params()).get("checks", [])
    return checks
