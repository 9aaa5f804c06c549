"""`orbisctl init` and `orbisctl render`: create an install directory, re-render its files."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.prompt import Prompt

from orbisctl import installer, output
from orbisctl.commands.options import InstallDirOption
from orbisctl.core.config import ImageSource, ModelProvider, OrbisConfig, TlsMode
from orbisctl.core.errors import CheckFailed
from orbisctl.core.fsutil import Change
from orbisctl.core.install import InstallDir
from orbisctl.core.secretfiles import GEMINI_API_KEY

app = typer.Typer()


# The orbis.yaml key each `init` flag sets: a bad value is reported against its flag.
INIT_FLAGS = {
    "domain": "--domain",
    "model.provider": "--model",
    "model.name": "--model-name",
    "tls.mode": "--tls",
    "tls.cert_file": "--tls-cert",
    "tls.key_file": "--tls-key",
    "widget.allowed_origins": "--origin",
    "images.source": "--image-source",
    "ports.http": "--http-port",
    "ports.https": "--https-port",
    "ports.bind_address": "--bind-address",
    "ports.ipv6": "--ipv6/--no-ipv6",
}


def _key_paths(tree: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        paths |= _key_paths(value, f"{path}.") if isinstance(value, dict) else {path}
    return paths


def _overrides(
    *,
    domain: str | None,
    model: ModelProvider | None,
    model_name: str | None,
    tls: TlsMode | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    origins: list[str] | None,
    image_source: ImageSource | None,
    http_port: int | None,
    https_port: int | None,
    bind_address: str | None = None,
    ipv6: bool | None = None,
) -> dict[str, Any]:
    """orbis.yaml keys set by flags (absent flags leave the existing value)."""
    given: dict[str, Any] = {}

    def put(path: str, value: Any) -> None:
        if value is None:
            return
        *parents, leaf = path.split(".")
        node = given
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value

    put("domain", domain)
    put("model.provider", model.value if model else None)
    put("model.name", model_name)
    put("tls.mode", tls.value if tls else None)
    put("tls.cert_file", str(tls_cert.resolve()) if tls_cert else None)
    put("tls.key_file", str(tls_key.resolve()) if tls_key else None)
    put("widget.allowed_origins", origins or None)
    put("images.source", image_source.value if image_source else None)
    put("ports.http", http_port)
    put("ports.https", https_port)
    put("ports.bind_address", bind_address)
    put("ports.ipv6", ipv6)
    return given


def _ask(question: str, *, choices: list[str] | None = None, default: str | None = None) -> str:
    """One question on the terminal (interactive init only)."""
    if default is None:
        return Prompt.ask(question, console=output.console, choices=choices)
    return Prompt.ask(question, console=output.console, choices=choices, default=default)


def _ask_missing(
    current: OrbisConfig, install: InstallDir, given: dict[str, Any], key_file: Path | None
) -> tuple[dict[str, Any], Path | None]:
    """Interactive init: ask for each essential value no flag gave."""
    if "domain" not in given:
        given["domain"] = _ask("Domain name of this appliance", default=current.domain)
    model = given.setdefault("model", {})
    if "provider" not in model:
        model["provider"] = _ask(
            "Speech model (emulator runs offline, gemini needs an API key)",
            choices=[provider.value for provider in ModelProvider],
            default=current.model.provider.value,
        )
    needs_key = not install.secret(GEMINI_API_KEY).exists()
    if model["provider"] == ModelProvider.GEMINI.value and needs_key and key_file is None:
        key_file = Path(_ask("Path of a file holding the Gemini API key"))
    tls = given.setdefault("tls", {})
    if "mode" not in tls:
        tls["mode"] = _ask(
            "TLS certificate (self-signed, or files you already have)",
            choices=[TlsMode.SELF_SIGNED.value, TlsMode.FILES.value],
            default=current.tls.mode.value,
        )
    if tls["mode"] == TlsMode.FILES.value:
        for key, question in (("cert_file", "certificate chain"), ("key_file", "private key")):
            if key not in tls:
                tls[key] = str(Path(_ask(f"Path of the {question} (PEM)")).resolve())
    widget = given.setdefault("widget", {})
    if "allowed_origins" not in widget:
        answer = _ask(
            "Web origins allowed to embed the widget (comma-separated, empty for none)",
            default=",".join(current.widget.allowed_origins),
        )
        widget["allowed_origins"] = [item.strip() for item in answer.split(",") if item.strip()]
    return given, key_file


@app.command()
def init(
    directory: InstallDirOption = Path(),
    non_interactive: Annotated[
        bool,
        typer.Option(
            "--non-interactive",
            envvar="ORBIS_NON_INTERACTIVE",
            help="Never prompt; take values from flags, orbis.yaml and defaults.",
        ),
    ] = False,
    domain: Annotated[
        str | None,
        typer.Option(envvar="ORBIS_DOMAIN", help="Public domain name, e.g. voice.example.com."),
    ] = None,
    model: Annotated[
        ModelProvider | None,
        typer.Option(envvar="ORBIS_MODEL", help="Speech model: the offline emulator or gemini."),
    ] = None,
    model_name: Annotated[
        str | None, typer.Option(envvar="ORBIS_MODEL_NAME", help="Gemini Live model name.")
    ] = None,
    gemini_key_file: Annotated[
        Path | None,
        typer.Option(
            envvar="ORBIS_GEMINI_KEY_FILE",
            help="File holding the Gemini API key (copied to secrets/gemini_api_key).",
        ),
    ] = None,
    tls: Annotated[
        TlsMode | None,
        typer.Option(envvar="ORBIS_TLS", help="self-signed (default) or files (your own)."),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(envvar="ORBIS_TLS_CERT", help="Certificate chain, leaf first (PEM)."),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(envvar="ORBIS_TLS_KEY", help="Private key (PEM).")
    ] = None,
    origin: Annotated[
        list[str] | None,
        typer.Option(
            envvar="ORBIS_ORIGINS",
            help="Web origin allowed to embed the widget (repeatable).",
        ),
    ] = None,
    image_source: Annotated[
        ImageSource | None,
        typer.Option(
            envvar="ORBIS_IMAGE_SOURCE",
            help="registry (official images) or local (built here, offline).",
        ),
    ] = None,
    http_port: Annotated[
        int | None, typer.Option(envvar="ORBIS_HTTP_PORT", help="Published HTTP port.")
    ] = None,
    https_port: Annotated[
        int | None, typer.Option(envvar="ORBIS_HTTPS_PORT", help="Published HTTPS port.")
    ] = None,
    bind_address: Annotated[
        str | None,
        typer.Option(
            envvar="ORBIS_BIND_ADDRESS",
            help="Host address the ports are published on (default 0.0.0.0: every address).",
        ),
    ] = None,
    ipv6: Annotated[
        bool | None,
        typer.Option(
            "--ipv6/--no-ipv6",
            envvar="ORBIS_IPV6",
            help="With --bind-address 0.0.0.0, also publish on every IPv6 address (default on).",
        ),
    ] = None,
) -> None:
    """Create the install directory: orbis.yaml, secrets, certificates, rendered files.

    Re-running it keeps every existing secret and certificate and re-renders the rest.
    """
    root = directory.resolve()
    given = _overrides(
        domain=domain,
        model=model,
        model_name=model_name,
        tls=tls,
        tls_cert=tls_cert,
        tls_key=tls_key,
        origins=origin,
        image_source=image_source,
        http_port=http_port,
        https_port=https_port,
        bind_address=bind_address,
        ipv6=ipv6,
    )
    from_flags = _key_paths(given)  # before the prompts add their answers
    if not non_interactive and sys.stdin.isatty():
        install = InstallDir(root)
        current = installer.plan_config(install, {}) if install.is_install() else OrbisConfig()
        given, gemini_key_file = _ask_missing(current, install, given, gemini_key_file)
    result = installer.init_install(
        root,
        overrides=given,
        gemini_key_file=gemini_key_file,
        flags=INIT_FLAGS,
        from_flags=from_flags,
    )

    for path in result.kept:
        output.info(f"kept     {escape(path)} (existing; init never overwrites it)")
    for path in result.replaced:
        output.info(f"replaced {escape(path)} (the emulator's generated key, by --gemini-key-file)")
    for path in result.created:
        if path not in result.replaced:
            output.info(f"created  {escape(path)}")
    for change in result.rendered:
        output.info(f"{change.change.value:<8} {escape(str(change.path))}")
    for note in result.notes:
        output.warn(note)
    if result.ownership_warning:
        output.warn(result.ownership_warning)
    output.info(
        f"[green]ready:[/] {escape(str(root))}  next: orbisctl up --dir {escape(str(root))}"
    )


@app.command()
def render(
    directory: InstallDirOption = Path(),
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Write nothing; print a diff and exit 1 if the files on disk differ."
        ),
    ] = False,
) -> None:
    """Re-render compose.yaml and the nginx config from orbis.yaml (byte-identical on repeat)."""
    result = installer.render_install(directory.resolve(), check=check)
    if check:
        if result.diff:
            output.console.out(result.diff, end="", highlight=False)
            raise CheckFailed(
                "the rendered files on disk differ from what orbis.yaml renders",
                hint="run `orbisctl render` to update them",
            )
        output.info("rendered files are up to date")
        return
    for change in result.changes:
        if change.change is not Change.UNCHANGED:
            output.info(f"{change.change.value:<8} {escape(str(change.path))}")
    if all(change.change is Change.UNCHANGED for change in result.changes):
        output.info("rendered files are up to date")
