"""`up`, `down` and `status` for target swarm: what they print (the core is orbisctl/swarm.py).

Not a verb group of its own: orbisctl/commands/stack.py hands a target-swarm install here.
"""

from __future__ import annotations

from rich.live import Live
from rich.markup import escape
from rich.table import Table

from orbisctl import output, swarm
from orbisctl.core.install import Install


def _table(rows: list[swarm.ServiceState], title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("service", "mode", "running", "nodes", "image", "problem"):
        table.add_column(column, no_wrap=column != "problem")
    for row in rows:
        style = "green" if row.ready else "yellow"
        table.add_row(
            row.service,
            row.mode,
            f"[{style}]{row.running}/{row.desired}[/]",
            escape(",".join(row.nodes) or "-"),
            escape(row.image.rsplit("/", 1)[-1]),
            escape(row.problem),
        )
    return table


def up(install: Install, *, timeout: float) -> None:
    live = Live(_table([], "deploying"), console=output.console, transient=True, auto_refresh=False)
    show = not output.options.quiet and output.console.is_terminal

    def on_status(rows: list[swarm.ServiceState]) -> None:
        if show:
            live.update(_table(rows, "waiting for every replica to run"), refresh=True)

    def on_step(message: str) -> None:
        output.info(f"[dim]·[/] {escape(message)}")

    if show:
        live.start()
    try:
        result = swarm.up(
            install.root, install.config, timeout=timeout, on_step=on_step, on_status=on_status
        )
    finally:
        if show:
            live.stop()
    output.print_table(_table(result.services))
    timings = ", ".join(
        f"{k.removesuffix('_seconds')} {v:.0f} s" for k, v in result.timings.items()
    )
    output.info(f"[green]OrbisVoice is up on the swarm[/] ({result.seconds:.0f} s: {timings})")
    if result.pruned:
        output.info(f"[dim]removed older secret/config versions: {', '.join(result.pruned)}[/]")
    for name, url in result.urls.items():
        output.info(f"  {name:<10} {url}")


def down(install: Install, *, volumes: bool) -> None:
    result = swarm.down(install.root, install.config, volumes=volumes)
    if not result.removed:
        output.info(f"no stack {install.config.project_name} on this swarm")
    else:
        output.info(
            f"removed the stack {install.config.project_name} (services, networks, secrets)"
        )
    if not volumes:
        output.info("data volumes kept (on the data node)")
        return
    if result.volumes_removed:
        output.info(f"deleted the data volumes on this node: {', '.join(result.volumes_removed)}")
    for node, names in sorted(result.volumes_elsewhere.items()):
        output.warn(
            f"node {node} holds data volumes this engine cannot delete: on that node run "
            f"`docker volume rm {' '.join(names)}`"
        )


def status(install: Install, *, as_json: bool) -> None:
    rows, nodes = swarm.status(install.config)
    if as_json:
        output.print_json(
            {
                "project": install.config.project_name,
                "target": "swarm",
                "services": [r.as_json() for r in rows],
                "nodes": [vars(n) for n in nodes],
            }
        )
        return
    if not rows:
        output.info("the stack is not deployed (`orbisctl up` deploys it)")
        return
    output.print_table(_table(rows))
    ready = ", ".join(
        f"{n.hostname} {n.address} ({n.state}{', data' if n.data else ''})" for n in nodes
    )
    output.info(f"nodes: {ready}")
