"""Render the install's files from orbis.yaml: pure functions, text in and text out.

`render_stack(cfg)` returns every rendered file as {relative path: text}; writing them is
`fsutil.write_tree`'s job. Rendering is deterministic: no timestamps, no randomness, sorted
inputs, so the same config always renders byte-identical files.
"""

from __future__ import annotations

import ipaddress
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backups import pgbackrest_config
from orbisctl import image_digests
from orbisctl.core.config import EVERY_IPV4_ADDRESS, ImageSource, ModelProvider, OrbisConfig, Target
from orbisctl.core.secretfiles import SecretMount, secret_mount, secret_mounts
from orbisctl.templating import environment

# Every container that reads a secret runs as this uid/gid; `init` makes it the owner of the
# secret files (mode 0600), because Compose mounts file secrets as bind mounts that keep the
# host's owner and mode.
RUNTIME_UID = 10001

# Ports inside the containers (docs/architecture.md). Only nginx publishes ports.
API_PORT = 3000
REFERRALS_PORT = 3001
GATEWAY_PORT = 4001
EMULATOR_PORT = 9443
NGINX_HTTP_PORT = 8080
NGINX_HTTPS_PORT = 8443

# nginx lets one address send this many tokens' worth of requests with credentials
# (rate_limits.authenticated_per_minute each): customers behind one NAT are not throttled
# together, and invented tokens (a fresh per-token budget each) cannot flood the API.
AUTHENTICATED_ADDRESS_FACTOR = 10

# Where files sit inside the containers.
WEB_ROOT = "/usr/share/orbis/web"
# While this file exists in nginx's tmpfs, every proxied location answers 503 unavailable
# with this Retry-After (maintenance: a restore's switch). A restarted nginx has none.
MAINTENANCE_FLAG = "/tmp/orbis-maintenance/on"  # noqa: S108 (inside the container, not here)
UNAVAILABLE_RETRY_SECONDS = 5
CONTAINER_TLS_DIR = "/etc/orbis/tls"

# Continuous archiving inside the postgres container: the install's pgbackrest/ is mounted
# at pgBackRest's default configuration directory (a directory, so a re-rendered file reaches
# the running container) and the secret half is a compose secret in the include directory the
# container's environment names, so a bare `pgbackrest` there (the server's archive_command,
# `docker compose exec`) reads both. The local repository and the async spool are in the
# `pgbackrest_data` volume, the locks in the container's tmpfs.
PGBACKREST_CONFIG = Path("pgbackrest/pgbackrest.conf")
PGBACKREST_CONFIG_MOUNT = "/etc/pgbackrest"
PGBACKREST_INCLUDE_DIR = posixpath.dirname(secret_mount("pgbackrest_secret").container_path)
PGBACKREST_VOLUME_MOUNT = "/var/lib/pgbackrest"
# backup.remote.ca_file inside the postgres container (beside, not inside, the read-only
# configuration mount).
REMOTE_CA_MOUNT = "/etc/ssl/orbis-remote-ca.crt"
CONTAINER_PGDATA = "/var/lib/postgresql/data/pgdata"
# PostgreSQL switches to a new WAL segment at least this often when there were writes, so
# at most this much of them is not yet archived (the seed's RPO, issue 16: at most 60 s).
ARCHIVE_TIMEOUT_SECONDS = 60

# Output path -> template path (relative to the template root). Explicit, so templates that
# are not install files (Dockerfiles for local image builds) are never rendered into it.
RENDERED_FILES: dict[Path, str] = {
    Path("compose.yaml"): "compose/compose.yaml.j2",
    Path("nginx/nginx.conf"): "nginx/nginx.conf.j2",
    Path("nginx/snippets/tls.conf"): "nginx/snippets/tls.conf.j2",
    Path("nginx/snippets/security_headers.conf"): "nginx/snippets/security_headers.conf.j2",
    Path("nginx/snippets/proxy.conf"): "nginx/snippets/proxy.conf.j2",
    Path("nginx/snippets/websocket.conf"): "nginx/snippets/websocket.conf.j2",
    Path("nginx/snippets/real_ip.conf"): "nginx/snippets/real_ip.conf.j2",
}

COMPOSE_FILE = Path("compose.yaml")
# target: swarm. `orbisctl up` renders it (compose.yaml.j2 with `swarm` on): the names of its
# secrets and configs carry a hash of the files' content, which `render` does not read.
STACK_FILE = Path("stack.yaml")

# The uid:gid the postgres and redis images' own users have. In a swarm they run as these:
# a fresh volume is filled from the image, whose data directories those users own, and a
# swarm has no one-shot job to chown it (compose's volume-init).
DATA_USERS: dict[ImageSource, dict[str, str]] = {
    ImageSource.LOCAL: {"postgres": "999:999", "redis": "999:999"},
    # postgres:15-alpine and redis:7-alpine
    ImageSource.REGISTRY: {"postgres": "70:70", "redis": "999:1000"},
}


@dataclass(frozen=True)
class SwarmObject:
    """A swarm secret or config made from an install file (`path`, relative to the root)."""

    kind: str  # "secret" or "config"
    path: Path


def swarm_objects(cfg: OrbisConfig) -> dict[str, SwarmObject]:
    """Every secret and config the stack file declares, by its key in the stack file."""
    emulator = cfg.model.provider is ModelProvider.EMULATOR
    objects = {
        key: SwarmObject("secret", Path(mount.path)) for key, mount in stack_secrets(cfg).items()
    }
    for key, _target, path in _nginx_configs():
        objects[key] = SwarmObject("config", path)
    objects["server_crt"] = SwarmObject("config", Path("tls/server.crt"))
    if emulator:
        objects["tls_ca"] = SwarmObject("config", Path("tls/ca.crt"))
        objects["emulator_crt"] = SwarmObject("config", Path("tls/emulator.crt"))
    return objects


def stack_secrets(cfg: OrbisConfig) -> dict[str, SecretMount]:
    """The secrets the stack mounts (orbisctl/core/secretfiles.py's registry), by key."""
    return secret_mounts(
        archiving=archiving_enabled(cfg),
        emulator=cfg.model.provider is ModelProvider.EMULATOR,
    )


def _nginx_configs() -> list[tuple[str, str, Path]]:
    """(config key, path in the nginx container, install file) of every rendered nginx file."""
    found = []
    for path in sorted(RENDERED_FILES):
        if path.parts[0] != "nginx":
            continue
        key = "nginx_conf" if path.name == "nginx.conf" else f"nginx_{path.stem}"
        found.append((key, "/etc/" + path.as_posix(), path))
    return found


# Cloudflare's published edge ranges (https://www.cloudflare.com/ips/), used for
# `set_real_ip_from` when `cloudflare.real_ip` is on.
CLOUDFLARE_RANGES: tuple[str, ...] = (
    "173.245.48.0/20",
    "103.21.244.0/22",
    "103.22.200.0/22",
    "103.31.4.0/22",
    "141.101.64.0/18",
    "108.162.192.0/18",
    "190.93.240.0/20",
    "188.114.96.0/20",
    "197.234.240.0/22",
    "198.41.128.0/17",
    "162.158.0.0/15",
    "104.16.0.0/13",
    "104.24.0.0/14",
    "172.64.0.0/13",
    "131.0.72.0/22",
    "2400:cb00::/32",
    "2606:4700::/32",
    "2803:f800::/32",
    "2405:b500::/32",
    "2405:8100::/32",
    "2a06:98c0::/29",
    "2c0f:f248::/32",
)

_SIZE_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3}


@dataclass(frozen=True)
class ImageRefs:
    """The image of each container, in one place (the image builds read these too)."""

    postgres: str
    redis: str
    nginx: str
    runtime: str
    migrate: str  # the runtime image the migrate job runs (images.migrate_tag)


def image_refs(cfg: OrbisConfig) -> ImageRefs:
    """Official images from a registry, or the ones `orbisctl` builds locally (offline)."""
    tag = cfg.images.tag
    runtime = f"orbisvoice/runtime:{tag}"
    migrate = f"orbisvoice/runtime:{cfg.images.migrate_tag or tag}"
    # Ours in both sources: nginx carries the web files, postgres pgBackRest (registry: built
    # FROM the upstream images of image_digests.json). Built on this host, so they have no
    # registry digest to pin.
    nginx = f"orbisvoice/nginx:{tag}"
    data = cfg.images.data_tag or tag
    postgres = f"orbisvoice/postgres:15-{data}"
    if cfg.images.source is ImageSource.LOCAL:
        return ImageRefs(
            postgres=postgres,
            redis=f"orbisvoice/redis:7-{data}",
            nginx=nginx,
            runtime=runtime,
            migrate=migrate,
        )
    # Pinned by digest from image_digests.json once scripts/refresh-image-digests has run.
    return ImageRefs(
        postgres=postgres,
        redis=image_digests.pinned("redis"),
        nginx=nginx,
        runtime=runtime,
        migrate=migrate,
    )


def public_url(cfg: OrbisConfig) -> str:
    port = "" if cfg.ports.https == 443 else f":{cfg.ports.https}"
    return f"https://{cfg.domain}{port}"


def published_ports(cfg: OrbisConfig) -> list[str]:
    """nginx's compose `ports` entries (HOST_IP:PUBLISHED:TARGET) for `ports.bind_address`.

    0.0.0.0 with ipv6 on is written without an address, which Docker publishes on every IPv4
    and every IPv6 address (what every install did before `bind_address` existed).
    """
    address = ipaddress.ip_address(cfg.ports.bind_address)
    if str(address) == EVERY_IPV4_ADDRESS and cfg.ports.ipv6:
        host = ""
    elif address.version == 6:
        host = f"[{address}]:"
    else:
        host = f"{address}:"
    return [
        f"{host}{cfg.ports.http}:{NGINX_HTTP_PORT}",
        f"{host}{cfg.ports.https}:{NGINX_HTTPS_PORT}",
    ]


def _bytes(size: str) -> int:
    return int(size[:-1]) * _SIZE_UNITS[size[-1]]


def archiving_enabled(cfg: OrbisConfig) -> bool:
    """pgBackRest runs in the compose stack; the swarm target has no archiving yet."""
    return cfg.backup.archive.enabled and cfg.target is Target.COMPOSE


def render_pgbackrest_config(cfg: OrbisConfig) -> str:
    """The secret-free half of pgBackRest's configuration in the postgres container."""
    cluster = pgbackrest_config.ClusterLocation(
        data_dir=CONTAINER_PGDATA, socket_dir="/var/run/postgresql", user="orbis"
    )
    local = pgbackrest_config.Repository(
        f"{PGBACKREST_VOLUME_MOUNT}/repo", window_days=cfg.backup.archive.window_days
    )
    workspace = pgbackrest_config.Workspace(
        spool_dir=f"{PGBACKREST_VOLUME_MOUNT}/spool",
        lock_dir="/tmp/pgbackrest",  # noqa: S108 (the container's own tmpfs)
    )
    repositories = [local]
    remote = cfg.backup.remote
    if remote is not None:
        store = pgbackrest_config.ObjectStore(
            endpoint=remote.endpoint,
            bucket=remote.bucket,
            region=remote.region,
            port=remote.port,
            uri_style=remote.uri_style,
            ca_file=Path(REMOTE_CA_MOUNT) if remote.ca_file else None,
            verify_tls=remote.verify_tls,
        )
        repositories.append(
            pgbackrest_config.Repository(
                remote.path, store=store, window_days=cfg.backup.archive.window_days
            )
        )
    return pgbackrest_config.render_config(cluster, repositories, workspace)


def render_context(cfg: OrbisConfig, *, ocsp_stapling: bool = False) -> dict[str, Any]:
    """The variables every template sees (documented in docs/configuration.md)."""
    emulator = cfg.model.provider is ModelProvider.EMULATOR
    https_suffix = "" if cfg.ports.https == 443 else f":{cfg.ports.https}"
    swarm = cfg.target is Target.SWARM
    return {
        "cfg": cfg,
        "swarm": swarm,
        # Filled by render_swarm_stack: {stack file key: versioned swarm object name}.
        "swarm_names": {},
        "swarm_objects": swarm_objects(cfg),
        "data_users": DATA_USERS[cfg.images.source],
        "nginx_configs": [(key, target) for key, target, _ in _nginx_configs()]
        + [("server_crt", "/etc/nginx/tls/server.crt")],
        "images": image_refs(cfg),
        "runtime_user": f"{RUNTIME_UID}:{RUNTIME_UID}",
        "public_url": public_url(cfg),
        "https_suffix": https_suffix,
        "emulator_enabled": emulator,
        # The gateway must reach Google; with the emulator it stays on the internal network.
        "gateway_egress": not emulator,
        "gemini_base_url": f"https://emulator:{EMULATOR_PORT}" if emulator else "",
        "gemini_ca_file": f"{CONTAINER_TLS_DIR}/ca.crt" if emulator else "",
        "referrals_enabled": cfg.referrals_enabled,
        "allowed_origins": ",".join(cfg.widget.allowed_origins),
        # Redis refuses writes (instead of being OOM-killed) at three quarters of its limit.
        "redis_maxmemory": _bytes(cfg.limits.redis.memory) * 3 // 4,
        # A call may last max_call_seconds; the WebSocket tunnel must outlive it.
        "ws_timeout_seconds": cfg.gateway.max_call_seconds + 60,
        "maintenance_flag": MAINTENANCE_FLAG,
        "unavailable_retry_seconds": UNAVAILABLE_RETRY_SECONDS,
        "gateway_stop_grace_seconds": cfg.gateway.drain_timeout_seconds + 15,
        "cloudflare_ranges": CLOUDFLARE_RANGES if cfg.cloudflare.real_ip else (),
        # Peers whose X-Real-IP the API believes: nginx, as the compose DNS names it (the API
        # resolves the name, so a recreated nginx is still recognised), and with
        # cloudflare.real_ip Cloudflare's edges, for a chain nginx did not resolve itself.
        "trusted_proxies": ",".join(
            ("nginx", *(CLOUDFLARE_RANGES if cfg.cloudflare.real_ip else ()))
        ),
        "ocsp_stapling": ocsp_stapling,
        "published_ports": published_ports(cfg),
        "authenticated_address_factor": AUTHENTICATED_ADDRESS_FACTOR,
        "ports": {
            "api": API_PORT,
            "referrals": REFERRALS_PORT,
            "gateway": GATEWAY_PORT,
            "emulator": EMULATOR_PORT,
            "nginx_http": NGINX_HTTP_PORT,
            "nginx_https": NGINX_HTTPS_PORT,
        },
        "web_root": WEB_ROOT,
        "tls_dir": CONTAINER_TLS_DIR,
        "archiving": archiving_enabled(cfg),
        "secrets": stack_secrets(cfg),
        "archive_command": pgbackrest_config.archive_command(),
        "archive_timeout_seconds": ARCHIVE_TIMEOUT_SECONDS,
        "pgdata": CONTAINER_PGDATA,
        "pgbackrest": {
            "config": PGBACKREST_CONFIG.as_posix(),
            "config_mount": PGBACKREST_CONFIG_MOUNT,
            "include_dir": PGBACKREST_INCLUDE_DIR,
            "volume_mount": PGBACKREST_VOLUME_MOUNT,
            "remote": cfg.backup.remote is not None,
            "remote_ca": cfg.backup.remote.ca_file.as_posix()
            if cfg.backup.remote and cfg.backup.remote.ca_file
            else None,
            "remote_ca_mount": REMOTE_CA_MOUNT,
        },
    }


def render_stack(cfg: OrbisConfig, *, ocsp_stapling: bool = False) -> dict[Path, str]:
    """Every rendered install file, as {path relative to the install dir: text}.

    `ocsp_stapling` is on only when the operator's certificate names an OCSP responder
    (`tls.ocsp_responder`); self-signed certificates have none.
    """
    env = environment()
    context = render_context(cfg, ocsp_stapling=ocsp_stapling)
    # target: swarm has no compose.yaml; `up` renders stack.yaml (render_swarm_stack).
    skip = {COMPOSE_FILE} if cfg.target is Target.SWARM else set()
    files = {
        path: env.get_template(template).render(context)
        for path, template in sorted(RENDERED_FILES.items())
        if path not in skip
    }
    if archiving_enabled(cfg):
        files[PGBACKREST_CONFIG] = render_pgbackrest_config(cfg)
    return dict(sorted(files.items()))


def render_swarm_stack(
    cfg: OrbisConfig, names: Mapping[str, str], *, ocsp_stapling: bool = False
) -> str:
    """stack.yaml for `docker stack deploy`: the compose template with `swarm` on; `names`
    maps each key of swarm_objects(cfg) to its versioned swarm name."""
    missing = sorted(set(swarm_objects(cfg)) - set(names))
    if missing:
        raise ValueError(f"no swarm name for {', '.join(missing)}")
    context = render_context(cfg, ocsp_stapling=ocsp_stapling)
    context.update(swarm=True, swarm_names=dict(names))
    return environment().get_template(RENDERED_FILES[COMPOSE_FILE]).render(context)
