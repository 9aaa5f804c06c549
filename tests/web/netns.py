"""Chromium in its own network namespace, reaching the test servers through a relay.

Chromium aborts every request in flight (ERR_NETWORK_CHANGED) when the host's IP addresses
change, and on a shared machine Docker creates and removes bridges all the time. In a namespace
of its own, with only loopback, the browser sees no such change. Its loopback ports are relayed
to the same ports on the host's loopback by this process: a listening socket stays in the
namespace it was created in, so a thread enters the namespace just to create it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

from tests.web.support import Nginx

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def available() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def _pump(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


def _serve(listener: socket.socket, port: int) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return  # closed
        try:
            upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError:
            client.close()
            continue
        upstream.settimeout(None)
        for source, target in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pump, args=(source, target), daemon=True).start()


class IsolatedNetwork:
    def __init__(self, name: str, wrapper: Path) -> None:
        self.name = name
        self.wrapper = wrapper  # runs Chromium inside the namespace
        self._listeners: list[socket.socket] = []

    def relay(self, port: int) -> None:
        """Make the host's 127.0.0.1:port reachable as 127.0.0.1:port inside the namespace."""
        created: list[socket.socket] = []
        failure: list[OSError] = []

        def create() -> None:
            # setns moves only this thread; it ends right after, so nothing else runs in there.
            try:
                with Path(f"/run/netns/{self.name}").open() as netns:
                    _setns(netns.fileno())
                listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind(("127.0.0.1", port))
                listener.listen(64)
                created.append(listener)
            except OSError as exc:
                failure.append(exc)

        thread = threading.Thread(target=create)
        thread.start()
        thread.join()
        if failure:
            raise failure[0]
        self._listeners.append(created[0])
        threading.Thread(target=_serve, args=(created[0], port), daemon=True).start()

    def close(self) -> None:
        for listener in self._listeners:
            listener.close()


@contextlib.contextmanager
def isolated_network(directory: Path, chromium: str) -> Iterator[IsolatedNetwork]:
    name = f"orbis-web-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        subprocess.run(
            ["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True
        )
        wrapper = directory / "chromium-in-netns"
        wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {name} {chromium} "$@"\n')
        wrapper.chmod(0o755)
        network = IsolatedNetwork(name, wrapper)
        try:
            yield network
        finally:
            network.close()
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)


CHROMIUM = "/usr/bin/chromium"


class BrowserNetwork:
    """Where Chromium runs: its own network namespace when this process may make one."""

    def __init__(self, isolated: IsolatedNetwork | None) -> None:
        self.isolated = isolated
        self.executable = str(isolated.wrapper) if isolated else CHROMIUM

    def expose(self, server: Nginx) -> Nginx:
        if self.isolated is not None:
            self.isolated.relay(server.port)
        return server
