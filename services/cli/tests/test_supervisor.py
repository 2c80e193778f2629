"""The supervisor over small real processes: restarts with backoff, gives up loudly, stops cleanly."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from costwise.cli._supervisor import GaveUp, Policy, Spec, Supervisor

FAST = Policy(first_wait_s=0.05, max_wait_s=0.2, stable_after_s=60, give_up_crashes=5, give_up_window_s=60)


def python(name: str, code: str, tmp_path: Path, *, restart: bool = True) -> Spec:
    return Spec(name, [sys.executable, "-c", code], {}, tmp_path / f"{name}.log", restart=restart)


def tend_until(supervisor: Supervisor, done: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        supervisor.tend()
        time.sleep(0.01)


def test_a_process_that_keeps_dying_is_restarted_with_a_doubling_wait_then_given_up_on(tmp_path: Path) -> None:
    said: list[str] = []
    supervisor = Supervisor(FAST, say=said.append)
    steady = supervisor.start(python("steady", "import time; time.sleep(60)", tmp_path))
    supervisor.start(python("flaky", "import sys; sys.exit(3)", tmp_path))
    with pytest.raises(GaveUp) as gave_up:
        tend_until(supervisor, lambda: False)
    assert [re.search(r"in (\S+) s \(attempt (\d)", line).groups() for line in said] == [  # type: ignore[union-attr]
        ("0.05", "1"),
        ("0.1", "2"),
        ("0.2", "3"),
        ("0.2", "4"),
    ]
    assert all(line.startswith("flaky (pid ") and "exited with code 3" in line for line in said)
    assert "5 crashes within" in str(gave_up.value) and "flaky.log" in str(gave_up.value)
    assert steady.running()  # the launcher stops everything; the supervisor only reports
    supervisor.stop()
    assert not steady.running()


def test_bad_configuration_is_given_up_on_at_once(tmp_path: Path) -> None:
    supervisor = Supervisor(FAST, say=pytest.fail)
    supervisor.start(python("gateway", "import sys; sys.exit(2)", tmp_path))
    with pytest.raises(GaveUp, match=r"gateway .* exited with code 2 .*bad configuration"):
        tend_until(supervisor, lambda: False)


def test_a_process_that_stayed_up_starts_its_backoff_over(tmp_path: Path) -> None:
    said: list[str] = []
    policy = Policy(first_wait_s=0.05, stable_after_s=0.3, give_up_crashes=3, give_up_window_s=0.5)
    supervisor = Supervisor(policy, say=said.append)
    supervisor.start(python("router", "import time; time.sleep(0.4)", tmp_path))
    tend_until(supervisor, lambda: len(said) == 4)
    # Up longer than stable_after_s each time, and fewer than 3 crashes within 0.5 s: never given up on.
    assert all("in 0.05 s (attempt 1;" in line for line in said), said


def test_a_killed_process_takes_what_it_started_with_it(tmp_path: Path) -> None:
    said: list[str] = []
    supervisor = Supervisor(FAST, say=said.append)
    code = "import subprocess, sys, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
    worker = supervisor.start(python("worker", code, tmp_path))
    assert worker.proc is not None
    parent = psutil.Process(worker.proc.pid)
    tend_until(supervisor, lambda: bool(parent.children()))
    [engine] = parent.children()
    parent.kill()
    tend_until(supervisor, lambda: bool(said))
    assert "worker (pid" in said[0] and "was killed by SIGKILL" in said[0]
    engine.wait(timeout=5)  # the orphan (an engine core holding memory) went with it
    tend_until(supervisor, worker.running)  # and the worker came back
    supervisor.stop()


def test_stop_sends_sigterm_and_kills_what_does_not_stop_in_time(tmp_path: Path) -> None:
    supervisor = Supervisor(Policy(stop_timeout_s=0.5), say=pytest.fail)
    ready = tmp_path / "ready"
    stubborn = (
        f"import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); open({str(ready)!r}, 'w'); time.sleep(60)"
    )
    polite = supervisor.start(python("polite", "import time; time.sleep(60)", tmp_path))
    deaf = supervisor.start(python("deaf", stubborn, tmp_path))
    tend_until(supervisor, ready.exists)
    started = time.monotonic()
    supervisor.stop()
    assert 0.4 < time.monotonic() - started < 5
    assert polite.proc is not None and polite.proc.returncode == -15
    assert deaf.proc is not None and deaf.proc.returncode == -9


def test_a_convenience_that_dies_is_left_dead(tmp_path: Path) -> None:
    said: list[str] = []
    supervisor = Supervisor(FAST, say=said.append)
    ui = supervisor.start(python("tracing UI", "import sys; sys.exit(1)", tmp_path, restart=False))
    tend_until(supervisor, lambda: bool(said))
    for _ in range(20):
        supervisor.tend()
        time.sleep(0.01)
    assert len(said) == 1 and "running on without it" in said[0] and not ui.running()
    supervisor.stop()


def test_a_child_does_not_outlive_a_killed_launcher(tmp_path: Path) -> None:
    # A launcher of its own (SIGKILL must not hit this test's process), supervising one long sleeper.
    pid_file = tmp_path / "child.pid"
    launcher_code = f"""
import sys, time
from pathlib import Path
from costwise.cli._supervisor import Spec, Supervisor
child = Supervisor().start(Spec("sleeper", [sys.executable, "-c", "import time; time.sleep(120)"], {{}}, Path({str(tmp_path / "s.log")!r})))
Path({str(pid_file)!r}).write_text(str(child.proc.pid))
time.sleep(120)
"""
    launcher = psutil.Popen([sys.executable, "-c", launcher_code])
    try:
        deadline = time.monotonic() + 20
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the launcher never started its child"
            time.sleep(0.05)
        child = psutil.Process(int(pid_file.read_text()))
        launcher.kill()  # SIGKILL: no handler of the launcher's runs
        child.wait(timeout=10)  # raises psutil.TimeoutExpired if it outlived the launcher
    finally:
        launcher.kill()
