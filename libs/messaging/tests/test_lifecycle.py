"""``run``: every service's entry point — exit codes and signals, in a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SERVICE = """
import asyncio, logging, sys
from costwise.messaging import run

class Service:
    async def start(self):
        logging.getLogger("costwise.svc").debug("ours, at debug")
        logging.getLogger("somelib").debug("a library's, at debug")
        print("started", flush=True)
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


def _run(
    tmp_path: Path, build_s: float, config: str, *, signal_after: str, log_level: str | None = None
) -> tuple[int, list[str], str]:
    script = tmp_path / "svc.py"
    script.write_text(SERVICE)
    env = {k: v for k, v in os.environ.items() if k != "COSTWISE_LOG_LEVEL"}
    if log_level is not None:
        env["COSTWISE_LOG_LEVEL"] = log_level
    proc = subprocess.Popen(
        [sys.executable, str(script), str(build_s), config],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
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


def test_the_log_level_setting_reaches_costwise_loggers_only(tmp_path: Path) -> None:
    _, _, quiet = _run(tmp_path, 0, "good", signal_after="started")
    _, _, loud = _run(tmp_path, 0, "good", signal_after="started", log_level="debug")
    assert "ours, at debug" not in quiet
    assert "costwise.svc DEBUG ours, at debug" in loud and "a library's" not in loud


def test_an_unknown_log_level_is_bad_configuration(tmp_path: Path) -> None:
    code, lines, err = _run(tmp_path, 0, "good", signal_after="", log_level="chatty")
    assert (code, err) == (2, "svc: COSTWISE_LOG_LEVEL='chatty' is not a log level (debug, info, warning, error)\n")
    assert "started" not in lines
