"""A nats-server started from a given config (users and permissions), and connections that see its refusals."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nats.aio.client import Client as Nats

from costwise.messaging import find_nats_server

__all__ = ["RecordingConnection", "SecuredNats", "start_configured_nats"]

# How nats-server logs a refused publish or subscribe (at [ERR]): `... - Publish Violation - Subject "x.y"`.
_VIOLATION = re.compile(r'(?:Publish|Subscription) Violation - Subject "([^"]+)"')


@dataclass(frozen=True)
class SecuredNats:
    """A running nats-server started from a config file (stop it with ``proc.terminate()``)."""

    proc: subprocess.Popen[bytes]
    hostport: str
    log: Path
    """The server's own log: permission violations are logged there too."""

    async def violation_logged(self, user: str, matches: Callable[[str], bool]) -> bool:
        """Whether the server logs a permissions violation of ``user`` on a subject that ``matches`` (waiting up
        to 3 s: the log line and the error sent to the client are not ordered)."""
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            lines = self.log.read_text(errors="replace").splitlines()
            found = (m[1] for line in lines if f'user:{user}"' in line and (m := _VIOLATION.search(line)))
            if any(map(matches, found)):
                return True
            await asyncio.sleep(0.02)
        return False


def start_configured_nats(conf: Path, tmp: Path) -> SecuredNats:
    """Start ``nats-server -c conf`` on a free loopback port (found through ``--ports_file_dir``, no race)."""
    ports = tmp / "ports"
    ports.mkdir()
    log = tmp / "nats.log"
    argv = [find_nats_server(), "-c", str(conf), "-a", "127.0.0.1", "-p", "-1", "--ports_file_dir", str(ports)]
    proc = subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        for found in ports.glob("*.ports"):
            try:
                port = int(json.loads(found.read_text())["nats"][0].rsplit(":", 1)[1])
                return SecuredNats(proc, f"127.0.0.1:{port}", log)
            except (ValueError, KeyError, IndexError):
                pass
        time.sleep(0.02)
    proc.kill()
    raise TimeoutError("nats-server did not start")


class RecordingConnection:
    """A connection that records the server's asynchronous errors (permission violations arrive that way)."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc = Nats()

    async def open(self, hostport: str, user: str, password: str, inbox: str = "_INBOX") -> RecordingConnection:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc).lower())

        await self.nc.connect(
            f"nats://{user}:{password}@{hostport}", inbox_prefix=inbox, error_cb=on_error, allow_reconnect=False
        )
        return self

    async def violated(self, subject: str) -> bool:
        """Whether the server reported a permissions violation naming ``subject`` (waiting up to 3 s for it)."""
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            if any("permissions violation" in e and subject.lower() in e for e in self.errors):
                return True
            await asyncio.sleep(0.02)
        return False
