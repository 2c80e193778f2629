"""Container health check for every costwise image (stdlib only; Docker HEALTHCHECK and Kubernetes probes run it).

The services expose no HTTP endpoint of their own (the gateway excepted), and what makes one useful is its NATS
connection: healthy = an established TCP connection to a NATS client port (``COSTWISE_HEALTH_NATS_PORT``, 4222).
With ``COSTWISE_HEALTH_URL`` set (the gateway: its ``/openapi.json``) that URL must answer 200 as well.
Exit 0 healthy, 1 not (one line on stderr saying why).
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

_ESTABLISHED = "01"


def nats_connected(port: int) -> bool:
    """Whether this network namespace holds an established TCP connection to ``port`` on any host."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            remote, state = fields[2], fields[3]
            if state == _ESTABLISHED and int(remote.rsplit(":", 1)[1], 16) == port:
                return True
    return False


def main() -> int:
    port = int(os.environ.get("COSTWISE_HEALTH_NATS_PORT", "4222"))
    if not nats_connected(port):
        print(f"unhealthy: no connection to NATS (port {port})", file=sys.stderr)
        return 1
    url = os.environ.get("COSTWISE_HEALTH_URL")
    if url:
        try:
            with urllib.request.urlopen(url, timeout=3) as reply:
                if reply.status != 200:
                    print(f"unhealthy: {url} answered {reply.status}", file=sys.stderr)
                    return 1
        except OSError as exc:
            print(f"unhealthy: {url}: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
