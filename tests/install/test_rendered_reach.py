"""Re-rendered files reach the service that reads them (issue 15 item 10: after `render` + `up`
nginx kept serving its old nginx.conf). `render` replaced nginx/nginx.conf by a rename, but
the file is bind-mounted into nginx on its own, and such a mount holds the old inode: the
container never saw the new file, so `up`'s reload reloaded the old config."""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from orbisctl import rendered
from tests.install.helpers import invoke


def raise_public_limit(root: Path, per_minute: int) -> None:
    config = yaml.safe_load((root / "orbis.yaml").read_text())
    config["rate_limits"]["public_per_minute"] = per_minute
    (root / "orbis.yaml").write_text(yaml.safe_dump(config))


def test_render_keeps_the_inode_of_a_file_mounted_on_its_own(default_install: Path) -> None:
    conf = default_install / "nginx" / "nginx.conf"
    inode = conf.stat().st_ino
    raise_public_limit(default_install, 600)
    result = invoke("render", "--dir", str(default_install))
    assert result.exit_code == 0, result.output
    assert "updated  nginx/nginx.conf" in result.output
    assert "zone=public:10m rate=600r/m;" in conf.read_text()
    # What a container holding the old inode now reads: the new file.
    assert conf.stat().st_ino == inode
    assert not conf.with_name("nginx.conf.new").exists()
    assert set(rendered.NGINX_MOUNTS) >= rendered.SINGLE_FILE_MOUNTS


@dataclass
class FakeContainer:
    """What the engine's archive API answers for a container's files."""

    name: str
    files: dict[str, bytes]

    def get_archive(self, path: str) -> tuple[list[bytes], dict[str, str]]:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as tar:
            data = self.files[path]
            info = tarfile.TarInfo(PurePosixPath(path).name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        return [out.getvalue()], {}


def view(root: Path) -> dict[str, bytes]:
    return {
        str(target): (root / relative).read_bytes()
        for relative, target in rendered.NGINX_MOUNTS.items()
    }


def test_up_knows_what_nginx_has_not_taken(default_install: Path) -> None:
    root = default_install
    assert rendered.changed_since_loaded(root) is None  # never recorded: unknown
    rendered.save_state(root, {"nginx": rendered.digests(root)})
    assert rendered.changed_since_loaded(root) == []
    seeing = FakeContainer("orbis-nginx-1", view(root))
    old = view(root)
    raise_public_limit(root, 900)
    assert invoke("render", "--dir", str(root)).exit_code == 0
    assert rendered.changed_since_loaded(root) == ["nginx/nginx.conf"]  # reload it
    # A container showing the old bytes (a mount of a replaced inode) must be recreated.
    blind = FakeContainer("orbis-nginx-2", old)
    seeing.files = view(root)
    assert rendered.blind_containers(root, [seeing, blind]) == [
        rendered.Blind("orbis-nginx-2", "nginx/nginx.conf")
    ]
