"""``run``: every service's entry point — exit codes and signals, in a real process."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

SERVICE = """
import asyncio, sys
from costwise.messaging import run

class Service:
    async def start(self): print("started", flush=True)
    async def stop(self): print("stopped", flush=True)

async def build():
    print("building", flush=True)
    await asyncio.sleep(float(sys.argv[1]))
    if sys.argv[2] == "bad":
        raise ValueError("COSTWISE_X_Y: expected an int")
    print("built", flush=True)
    return Service()

sys.exit(run(build, name="svc"))
"""


def _run(tmp_path: Path, build_s: float, config: str, *, signal_after: str) -> tuple[int, list[str], str]:
    script = tmp_path / "svc.py"
    script.write_text(SERVICE)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(build_s), config], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    lines = [proc.stdout.readline().strip()]
    while lines[-1] not in (signal_after, ""):
        lines.append(proc.stdout.readline().strip())
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, lines + out.split(), err


def test_a_signal_while_serving_stops_cleanly(tmp_path: Path) -> None:
    code, lines, _ = _run(tmp_path, 0, "good", signal_after="started")
    assert (code, lines) == (0, ["building", "built", "started", "stopped"])


def test_a_signal_while_building_starts_nothing_and_stops_cleanly(tmp_path: Path) -> None:
    """A pod scaled in while it loads its models: exit 0 (not killed by the signal), what build opened is closed."""
    code, lines, _ = _run(tmp_path, 2, "good", signal_after="building")
    assert (code, lines) == (0, ["building", "built", "stopped"])


def test_bad_configuration_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    code, _, err = _run(tmp_path, 0, "bad", signal_after="")
    assert (code, err) == (2, "svc: COSTWISE_X_Y: expected an int\n")
