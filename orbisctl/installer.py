"""`init` and `render` as plain functions: plan everything, check everything, then write.

Nothing touches the disk until every input has been validated, so a failed `init` leaves
the directory as it was. Existing secrets and certificates are never overwritten.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from backups.pgbackrest_config import RepositoryKeys, render_secret_config
from orbisctl.core import engine
from orbisctl.core.config import (
    CONFIG_FILENAME,
    ModelProvider,
    OrbisConfig,
    TlsMode,
    dump_config,
    load_config,
    parse_config,
)
from orbisctl.core.errors import ConfigError, EngineError, InstallDirError, UserError
from orbisctl.core.fsutil import (
    FileChange,
    atomic_write,
    diff_tree,
    recover_in_place,
    rewrite_in_place,
    write_tree,
)
from orbisctl.core.install import (
    PUBLIC_MODE,
    SECRET_MODE,
    SECRETS_DIR_MODE,
    InstallDir,
    check_init_target,
    require_install,
)
from orbisctl.core.secretfiles import (
    ARCHIVE_KEY,
    GEMINI_API_KEY,
    MOUNTED_SECRETS,
    PGBACKREST_SECRET_CONFIG,
    REMOTE_ACCESS_KEY,
    REMOTE_SECRET_KEY,
    SECRET_NAMES,
    current_value,
    generate_secret,
    is_emulator_key,
    read_gemini_key,
)
from orbisctl.render import RUNTIME_UID, render_stack
from orbisctl.rendered import SINGLE_FILE_MOUNTS
from orbisctl.tls import (
    EMULATOR_DAYS,
    EMULATOR_NAMES,
    Pem,
    check_operator_files,
    covers_domain,
    due_for_renewal,
    expires,
    has_ocsp_responder,
    issue_server_cert,
    issued_by,
    new_ca,
    server_names,
    verify_chain,
)

SERVER_CERT = "tls/server.crt"
SERVER_KEY = "tls/server.key"
CA_CERT = "tls/ca.crt"
CA_KEY = "tls/ca.key"
EMULATOR_CERT = "tls/emulator.crt"
EMULATOR_KEY = "tls/emulator.key"
# Keys mounted into containers (nginx, emulator) belong to the containers' uid.
MOUNTED_TLS_KEYS = frozenset({SERVER_KEY, EMULATOR_KEY})


@dataclass(frozen=True)
class PlannedFile:
    path: str  # relative to the install directory
    data: bytes
    mode: int
    mounted: bool  # read inside a container: owned by the runtime uid


@dataclass
class InitResult:
    config: OrbisConfig
    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    # Things the operator should know about what was kept.
    notes: list[str] = field(default_factory=list)
    rendered: list[FileChange] = field(default_factory=list)
    # Set when not running as root: mounted secrets could not be given to the runtime uid.
    ownership_warning: str | None = None


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def derived_project_name(root: Path) -> str:
    """A compose project name of this install's own: its directory's name, sanitized, and a
    short hash of its absolute path (`orbis-3f2a9c1d` for /srv/orbis), so two installs on one
    engine never share containers, networks or volumes."""
    base = re.sub(r"[^a-z0-9_-]+", "-", root.name.lower()).strip("-_")[:40].rstrip("-_")
    return f"{base or 'orbisvoice'}-{hashlib.sha256(str(root).encode()).hexdigest()[:8]}"


def _names_project(install: InstallDir) -> bool:
    """orbis.yaml sets project_name (every init writes it; an install from before per-install
    names keeps its `orbisvoice`)."""
    if not install.is_install():
        return False
    data = yaml.safe_load(install.config_file.read_text(encoding="utf-8"))
    return isinstance(data, dict) and "project_name" in data


def check_project_free(project: str, root: Path) -> None:
    """UserError when another install's containers on this engine use `project`; nothing to
    check without an engine (`up` checks again)."""
    try:
        client = engine.connect()
    except EngineError:
        return
    others = engine.foreign_installs(client, project, root)
    if others:
        raise UserError(
            f"the compose project name {project} is already used by the install in "
            f"{', '.join(others)}",
            hint="set another project_name in orbis.yaml (or remove the key: init then "
            "derives one from this directory) and run init again",
        )


def plan_config(
    install: InstallDir,
    overrides: dict[str, Any],
    *,
    flags: Mapping[str, str] | None = None,
    from_flags: Collection[str] = (),
) -> OrbisConfig:
    """The existing orbis.yaml (or the defaults) with the given keys replaced, validated.

    `flags` names the command-line flag of each key path; `from_flags` are the key paths
    whose value came from one. A problem with such a value names the flag, not orbis.yaml.
    """
    base = load_config(install.config_file).model_dump(mode="json") if install.is_install() else {}
    if "project_name" not in overrides and not _names_project(install):
        overrides = {**overrides, "project_name": derived_project_name(install.root)}
    try:
        return parse_config(_merge(base, overrides))
    except ConfigError as exc:
        if not exc.problems or not from_flags:
            raise
        raise _blame_flags(exc, flags or {}, from_flags) from None


def _related(key: str, path: str) -> bool:
    """`key` (a.b) is `path`, lies under it, or holds it: a problem at `path` may be its value."""
    return key == path or key.startswith(f"{path}.") or path.startswith(f"{key}.")


def _named_keys(flags: Mapping[str, str], path: str, message: str) -> list[str]:
    """The flags' keys a problem at `path` may be about: for a problem of a whole section
    (`ports: http and https must be different ports`), the keys under it that the message
    names (`ports.http`, `ports.https`, not `ports.bind_address`); all of them if it names none.
    """
    under = [key for key in flags if key.startswith(f"{path}.")]
    named = [
        key for key in under if re.search(rf"\b{re.escape(key.rsplit('.', 1)[-1])}\b", message)
    ]
    unnamed = set(under) - set(named) if named else set()
    return [key for key in flags if key not in unnamed]


def _blame_flags(
    exc: ConfigError, flags: Mapping[str, str], from_flags: Collection[str]
) -> ConfigError:
    """`exc` with each problem a flag's value caused shown against that flag."""
    lines: list[str] = []
    blamed: list[str] = []
    companions: list[str] = []
    from_file = False
    for problem in exc.problems:
        path, _, message = problem.partition(": ")
        keys = _named_keys(flags, path, message)
        given = [flags[key] for key in keys if key in from_flags and _related(key, path)]
        if not given:
            from_file = True
            lines.append(f"{CONFIG_FILENAME}: {problem}")
            continue
        lines.append(f"{', '.join(given)}: {message}")
        blamed += [flag for flag in given if flag not in blamed]
        companions += [
            flags[key]
            for key in keys
            if key not in from_flags and key.startswith(f"{path}.") and flags[key] not in companions
        ]
    hint = f"fix {', '.join(blamed)}"
    if companions:
        hint += f" (it goes with {' and '.join(companions)})"
    hint += "; `orbisctl init --help` lists the flags"
    if from_file:
        hint += f"; fix the key(s) named in {CONFIG_FILENAME} (docs/configuration.md)"
    return ConfigError(
        "the configuration is invalid: " + "; ".join(lines), lines, hint=hint, source=""
    )


def _read_existing(install: InstallDir, relative: str) -> bytes | None:
    try:
        return (install.root / relative).read_bytes()
    except FileNotFoundError:
        return None


def _plan_secrets(
    install: InstallDir, cfg: OrbisConfig, gemini_key_file: Path | None, result: InitResult
) -> list[PlannedFile]:
    planned = []
    gemini = cfg.model.provider is ModelProvider.GEMINI
    for name in SECRET_NAMES:
        relative = f"secrets/{name}"
        path = install.secret(name)
        if path.exists():
            # Switching from the emulator to Gemini: the emulator's generated key is worth
            # nothing to Google, so the operator's real key replaces it (the one exception).
            if not (name == GEMINI_API_KEY and gemini and is_emulator_key(path)):
                result.kept.append(relative)
                continue
            result.replaced.append(relative)
        if name == GEMINI_API_KEY and gemini:
            if gemini_key_file is None:
                raise UserError(
                    "model.provider is gemini but no Gemini API key was given",
                    hint="pass --gemini-key-file PATH (a file holding the key), "
                    "or --model emulator",
                )
            value = read_gemini_key(gemini_key_file)
        else:
            value = generate_secret(name)
        planned.append(PlannedFile(relative, value.encode(), SECRET_MODE, name in MOUNTED_SECRETS))
    if (
        gemini
        and gemini_key_file is not None
        and GEMINI_API_KEY not in {Path(item.path).name for item in planned}
    ):
        result.notes.append(
            "kept the existing secrets/gemini_api_key, not the key in --gemini-key-file; "
            "to change it, use `orbisctl rotate-keys`"
        )
    return planned


def _plan_archive_secret_config(
    install: InstallDir, cfg: OrbisConfig, planned: list[PlannedFile]
) -> PlannedFile | None:
    """secrets/pgbackrest.conf from the archive key (being created in `planned`, or on
    disk) and, with backup.remote, the object store's key pair, when it is missing or no
    longer matches. Both repositories are encrypted with the archive key, which the backup
    escrow covers."""
    relative = f"secrets/{ARCHIVE_KEY}"
    new_key = next((item.data for item in planned if item.path == relative), None)
    key = new_key.decode() if new_key is not None else current_value(install.secret(ARCHIVE_KEY))
    keys = [RepositoryKeys(cipher_pass=key.strip())]
    if cfg.backup.remote is not None:
        keys.append(
            RepositoryKeys(
                cipher_pass=key.strip(),
                access_key=_remote_key(install, REMOTE_ACCESS_KEY),
                secret_key=_remote_key(install, REMOTE_SECRET_KEY),
            )
        )
    data = render_secret_config(keys).encode()
    if _read_existing(install, f"secrets/{PGBACKREST_SECRET_CONFIG}") == data:
        return None
    return PlannedFile(f"secrets/{PGBACKREST_SECRET_CONFIG}", data, SECRET_MODE, mounted=True)


def _remote_key(install: InstallDir, name: str) -> str:
    path = install.secret(name)
    if not path.is_file() or not path.read_text().strip():
        raise InstallDirError(
            f"backup.remote is set but {path} is missing or empty",
            hint=f"write the object store's {name.removeprefix('remote_').replace('_', ' ')} "
            f"there on one line (`install -m 600 /dev/stdin {path}`), or remove backup.remote",
        )
    return current_value(path).strip()


def _write_planned(install: InstallDir, planned: list[PlannedFile]) -> None:
    for item in planned:
        atomic_write(
            install.root / item.path, item.data, mode=item.mode, owner=_owner(item.mounted)
        )


def complete_archive_secrets(root: Path) -> list[str]:
    """Give an install made before continuous archiving its archive key and pgBackRest's
    secret configuration (`up` runs this first); the files created, relative to `root`."""
    install = require_install(root)
    planned = []
    if not install.secret(ARCHIVE_KEY).exists():
        value = generate_secret(ARCHIVE_KEY).encode()
        planned.append(PlannedFile(f"secrets/{ARCHIVE_KEY}", value, SECRET_MODE, mounted=False))
    config = _plan_archive_secret_config(install, load_config(install.config_file), planned)
    if config is not None:
        planned.append(config)
    _write_planned(install, planned)
    return [item.path for item in planned]


def _differs(path: Path, data: bytes) -> bool:
    try:
        return path.read_bytes() != data
    except OSError:  # gone or unreadable: nothing to compare, nothing to say
        return False


def _plan_tls(
    install: InstallDir, cfg: OrbisConfig, result: InitResult
) -> tuple[list[PlannedFile], bytes]:
    """Files to create under tls/, and the server chain nginx will serve."""
    planned: list[PlannedFile] = []

    def keep_or_add(cert_path: str, key_path: str, make: Callable[[], Pem]) -> Pem:
        cert, key = _read_existing(install, cert_path), _read_existing(install, key_path)
        if cert is not None and key is not None:
            result.kept.extend([cert_path, key_path])
            return Pem(cert=cert, key=key)
        pem: Pem = make()
        planned.append(PlannedFile(cert_path, pem.cert, PUBLIC_MODE, mounted=False))
        planned.append(PlannedFile(key_path, pem.key, SECRET_MODE, key_path in MOUNTED_TLS_KEYS))
        return pem

    ca = keep_or_add(CA_CERT, CA_KEY, lambda: new_ca(cfg.domain))
    if cfg.tls.mode is TlsMode.FILES:
        cert_file, key_file = cfg.tls.cert_file, cfg.tls.key_file
        assert cert_file is not None and key_file is not None  # the config model checks this
        server = keep_or_add(
            SERVER_CERT,
            SERVER_KEY,
            lambda: check_operator_files(cert_file, key_file, domain=cfg.domain),
        )
        if SERVER_CERT in result.kept and _differs(cert_file, server.cert):
            result.notes.append(
                f"kept tls/server.crt, which differs from tls.cert_file ({cert_file}); to install "
                "that certificate, remove tls/server.crt and tls/server.key and run init again"
            )
    elif cfg.tls.mode is TlsMode.SELF_SIGNED:
        server = keep_or_add(
            SERVER_CERT, SERVER_KEY, lambda: issue_server_cert(ca, server_names(cfg.domain))
        )
    else:
        raise UserError(
            "tls.mode acme is not implemented yet",
            hint="use tls.mode self-signed, or files with your own certificate",
        )
    if SERVER_CERT in result.kept and not covers_domain(server.cert, cfg.domain):
        result.notes.append(
            f"the kept tls/server.crt does not cover the domain {cfg.domain}; remove "
            "tls/server.crt and tls/server.key and run init again to replace it"
        )
    keep_or_add(
        EMULATOR_CERT,
        EMULATOR_KEY,
        lambda: issue_server_cert(ca, EMULATOR_NAMES, days=EMULATOR_DAYS),
    )
    return planned, server.cert


def _owner(mounted: bool) -> tuple[int, int] | None:
    if mounted and os.geteuid() == 0:
        return (RUNTIME_UID, RUNTIME_UID)
    return None


def init_install(
    root: Path,
    *,
    overrides: dict[str, Any],
    gemini_key_file: Path | None,
    flags: Mapping[str, str] | None = None,
    from_flags: Collection[str] = (),
) -> InitResult:
    """Create or complete the install directory at `root`; keep what already exists.
    `flags` and `from_flags` as in `plan_config`."""
    install = check_init_target(root)
    cfg = plan_config(install, overrides, flags=flags, from_flags=from_flags)
    check_project_free(cfg.project_name, install.root)
    result = InitResult(config=cfg)
    planned = _plan_secrets(install, cfg, gemini_key_file, result)
    archive_config = _plan_archive_secret_config(install, cfg, planned)
    if archive_config is None:
        result.kept.append(f"secrets/{PGBACKREST_SECRET_CONFIG}")
    else:
        planned.append(archive_config)
    tls_files, server_chain = _plan_tls(install, cfg, result)
    planned += tls_files
    rendered = render_stack(cfg, ocsp_stapling=has_ocsp_responder(server_chain))

    # Everything is checked; from here on we write.
    install.root.mkdir(parents=True, exist_ok=True)
    install.secrets_dir.mkdir(mode=SECRETS_DIR_MODE, exist_ok=True)
    install.secrets_dir.chmod(SECRETS_DIR_MODE)
    install.tls_dir.mkdir(exist_ok=True)
    install.backups_dir.mkdir(exist_ok=True)
    _write_planned(install, planned)
    result.created.extend(item.path for item in planned)
    if any(item.mounted for item in planned) and os.geteuid() != 0:
        result.ownership_warning = (
            f"not running as root: the secret files stay yours; the containers (uid "
            f"{RUNTIME_UID}) can read them only after `chown {RUNTIME_UID}:{RUNTIME_UID}` "
            "of secrets/* (except backup_key and archive_key) and tls/server.key, tls/emulator.key"
        )
    atomic_write(install.config_file, dump_config(cfg).encode())
    result.rendered = write_tree(rendered, install.root, in_place=SINGLE_FILE_MOUNTS)
    return result


@dataclass(frozen=True)
class RenderResult:
    changes: list[FileChange]
    diff: str


def render_files(install: InstallDir) -> dict[Path, str]:
    cfg = load_config(install.config_file)
    server_chain = _read_existing(install, SERVER_CERT)
    if server_chain is None:
        raise InstallDirError(
            f"{install.root / SERVER_CERT} is missing",
            hint="run `orbisctl init` again: it recreates missing certificates",
        )
    return render_stack(cfg, ocsp_stapling=has_ocsp_responder(server_chain))


def render_install(root: Path, *, check: bool) -> RenderResult:
    """Re-render the install's files from orbis.yaml; with `check`, only compare."""
    install = require_install(root)
    files = render_files(install)
    diff = diff_tree(files, install.root)
    changes = write_tree(files, install.root, dry_run=check, in_place=SINGLE_FILE_MOUNTS)
    return RenderResult(changes=changes, diff=diff)


@dataclass(frozen=True)
class Renewal:
    """What `renew_server_cert` did: `renewed` or not, why, and the served certificate's end."""

    renewed: bool
    expires: datetime
    reason: str


def _require(install: InstallDir, relative: str) -> bytes:
    data = _read_existing(install, relative)
    if data is None:
        raise InstallDirError(
            f"{install.root / relative} is missing",
            hint="run `orbisctl init` again: it recreates missing certificates",
        )
    return data


def renew_server_cert(root: Path, *, force: bool = False, now: datetime | None = None) -> Renewal:
    """Issue tls/server.crt again from the install CA once it is due (fewer than RENEW_DAYS
    left), for the same key and the names of orbis.yaml's domain; `force` renews anyway.

    Only the install's own certificate is renewed: with `tls.mode: files`, or a server.crt
    the install CA did not sign (an operator's, copied in by hand), nothing is touched. The key
    is kept, so only the certificate changes and nginx never sees a certificate and key that do
    not match. nginx bind-mounts tls/server.crt on its own, which pins the file's inode: the
    file is rewritten in place (`rewrite_in_place`), so the running nginx takes the new one at
    its next reload, which the caller does (a reload keeps open WebSocket calls).
    """
    install = require_install(root)
    cfg = load_config(install.config_file)
    recover_in_place(install.root / SERVER_CERT)
    chain = _require(install, SERVER_CERT)
    if cfg.tls.mode is not TlsMode.SELF_SIGNED:
        return Renewal(
            False,
            expires(chain),
            f"tls.mode is {cfg.tls.mode.value}: the certificate is the operator's to renew",
        )
    ca = Pem(cert=_require(install, CA_CERT), key=_require(install, CA_KEY))
    if not issued_by(chain, ca.cert):
        return Renewal(
            False,
            expires(chain),
            "tls/server.crt was not issued by the install CA (tls/ca.crt): left as it is",
        )
    if not force and not due_for_renewal(chain, now):
        return Renewal(False, expires(chain), "not due yet")
    renewed = issue_server_cert(ca, server_names(cfg.domain), key=_require(install, SERVER_KEY))
    problem = verify_chain(renewed.cert, ca.cert, cfg.domain)
    if problem is not None:
        raise UserError(
            f"a certificate for {cfg.domain} from the install CA would be refused: {problem}",
            hint="the install CA is limited to the names it was made for; to change the "
            "domain, move tls/ca.* and tls/server.* aside and run `orbisctl init` again",
        )
    rewrite_in_place(install.root / SERVER_CERT, renewed.cert)
    return Renewal(True, expires(renewed.cert), "renewed")
