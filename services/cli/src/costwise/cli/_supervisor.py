"""Keep the stack's processes running: one that dies is restarted after a backoff, one that keeps dying stops it all.

The product's promise in small: a process may vanish at any moment and nothing is lost (JetStream keeps the
queues on disk; a restarted service picks up where the dead one left off).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GaveUp", "Policy", "Spec", "Supervisor"]

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

BAD_CONFIGURATION = 2
"""A service's exit code for bad configuration (``costwise.messaging.run``): restarting it cannot help."""


@dataclass(frozen=True)
class Policy:
    """When a process that died is started again, and when the launcher stops trying."""

    first_wait_s: float = 1.0
    max_wait_s: float = 30.0
    """The wait doubles after each crash, up to this."""
    stable_after_s: float = 60.0
    """A process that stayed up this long starts its backoff over when it next dies."""
    give_up_crashes: int = 5
    give_up_window_s: float = 300.0
    """This many crashes of one process within this window stop the stack."""
    stop_timeout_s: float = 30.0
    """How long processes may take to stop on SIGTERM before their process group is killed."""


@dataclass(frozen=True)
class Spec:
    """How to start one process: ``argv`` with ``env``, its output appended to ``log``."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    restart: bool = True
    """``False`` for a convenience (the tracing UI): when it dies, the stack runs on without it."""


class GaveUp(Exception):
    """A process kept dying, or said its configuration is bad: the launcher stops everything and exits 1."""


class Child:
    """One supervised process: the running one, and its crash history."""

    def __init__(self, spec: Spec, policy: Policy) -> None:
        self.spec = spec
        self.policy = policy
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.restart_at: float | None = None
        """When a dead process is due to start again (``None``: running, or not to be restarted)."""
        self.attempt = 0
        self._wait_s = policy.first_wait_s
        self._crashes: deque[float] = deque()

    def start(self) -> Child:
        with open(self.spec.log, "ab") as log:
            # Own session (so process group): a process is killed with everything it started (the worker's
            # vLLM engine core is its child), and a terminal's Ctrl-C reaches the launcher alone, which then
            # stops the services before the nats-server they hand their jobs back through.
            self.proc = subprocess.Popen(
                self.spec.argv,
                env=self.spec.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_terminate_with_parent,
            )
        self.started, self.restart_at = time.monotonic(), None
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill_group(self) -> None:
        """SIGKILL the process group: a process that will not stop, or what a dead one left behind."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def crashed(self, now: float) -> float | None:
        """Note a crash at ``now``: the wait before the restart, or ``None`` when it crashed too often."""
        policy = self.policy
        if now - self.started >= policy.stable_after_s:
            self.attempt, self._wait_s = 0, policy.first_wait_s
        self._crashes.append(now)
        while now - self._crashes[0] > policy.give_up_window_s:
            self._crashes.popleft()
        if len(self._crashes) >= policy.give_up_crashes:
            return None
        self.attempt += 1
        wait, self._wait_s = self._wait_s, min(self._wait_s * 2, policy.max_wait_s)
        return wait


class Supervisor:
    """Starts processes, restarts those that die (``tend``), and stops them (``stop``)."""

    def __init__(self, policy: Policy | None = None, *, say: Callable[[str], None] | None = None) -> None:
        self.policy = policy or Policy()
        self.children: list[Child] = []
        self._say = say or _say

    def start(self, spec: Spec) -> Child:
        child = Child(spec, self.policy).start()
        self.children.append(child)
        return child

    def run(self, stopping: Callable[[], bool], *, tick_s: float = 0.2) -> None:
        """Tend the processes until ``stopping()``; raises :class:`GaveUp`."""
        while not stopping():
            self.tend()
            time.sleep(tick_s)

    def tend(self) -> None:
        """One look at every process: a dead one is noted, one whose wait is over is started again."""
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is not None and now >= child.restart_at:
                child.start()
            elif child.restart_at is None and child.proc is not None and child.proc.poll() is not None:
                self._died(child, now)

    def _died(self, child: Child, now: float) -> None:
        assert child.proc is not None
        child.kill_group()  # an engine core whose worker died must not hold the memory the new one needs
        code, spec = child.proc.returncode, child.spec
        what = f"{spec.name} (pid {child.proc.pid}) {_how(code)} after {_duration(now - child.started)}"
        if not spec.restart:
            child.proc = None  # noted once; stop() leaves it alone
            self._say(f"{what}; running on without it (log: {spec.log})")
        elif code == BAD_CONFIGURATION:
            raise GaveUp(f"{what}: bad configuration, which restarting cannot fix (log: {spec.log})")
        elif (wait := child.crashed(now)) is None:
            window = _duration(self.policy.give_up_window_s)
            raise GaveUp(f"{what}: {self.policy.give_up_crashes} crashes within {window} (log: {spec.log})")
        else:
            child.restart_at = now + wait
            self._say(f"{what}; restarting it in {wait:g} s (attempt {child.attempt}; log: {spec.log})")

    def stop(self, children: Iterable[Child] | None = None) -> None:
        """SIGTERM ``children`` (default: all) at once, so workers hand their jobs back; SIGKILL the process
        group of any still running after ``policy.stop_timeout_s``, and whatever the others left behind."""
        stopping = [c for c in (self.children if children is None else children) if c.running()]
        for child in stopping:
            assert child.proc is not None
            child.proc.terminate()
        deadline = time.monotonic() + self.policy.stop_timeout_s
        for child in stopping:
            assert child.proc is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(timeout=max(deadline - time.monotonic(), 0))
            child.kill_group()
            child.proc.wait()
        for child in stopping:
            child.restart_at = None


def _terminate_with_parent() -> None:
    """In the child, before exec: SIGTERM when the launcher dies, even by SIGKILL, so no service outlives it
    (its own session keeps it from a terminal's Ctrl-C, which would otherwise be how it ended). Linux only."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _say(line: str) -> None:
    print(f"costwise up: {line}", file=sys.stderr, flush=True)


def _how(returncode: int) -> str:
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        return f"was killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"was killed by signal {-returncode}"


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
