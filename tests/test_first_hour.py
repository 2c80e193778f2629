"""The first hour, as a new user lives it (issue 18): a fresh clone, nothing on PATH but Python (and the
system's make, git, curl), ``make up``, then every command README.md shows, in the README's order, taken from
README.md itself rather than retyped. Each must succeed, and where the README shows an output (a result's
``source``, a ``chat.completion``) the real output must say the same.

The only edits to a command are the ones a reader makes: the stack's ports (this test picks free ones, so it
runs beside a ``make up`` of your own), the optional ``[…]`` parts included, and the placeholders (``R``, the
example key id, ``$KEY``, ``KEY``) filled in with what the earlier commands printed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from costwise.testing import free_port

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PATH = "/usr/bin:/bin"
README_NATS, README_GATEWAY = "127.0.0.1:4222", "127.0.0.1:8080"
README_KEY_ID = "62cefe2fb1333ea2"

# The README's commands this test does not run, each with its reason. Every other one runs.
NOT_RUN = {
    "./costwise python -m costwise.gateway": "the gateway server itself, which make up already runs",
    "./costwise costwise-bench batching": "a benchmark starts its own engine; bench tests cover it",
}
# Output fields the README shows that must read the same on the real stack.
SHOWN = re.compile(r'"(type|status|source|object|kind)":"([^"]+)"')


@dataclass(frozen=True)
class Step:
    """One thing the README tells the reader to type: a shell command or a Python program, with what it shows."""

    kind: str  # "sh" or "python"
    text: str
    shown: str = ""


def readme_steps(text: str) -> list[Step]:
    steps: list[Step] = []
    for kind, body in re.findall(r"^```(sh|python)\n(.*?)^```", text, flags=re.S | re.M):
        if kind == "python":
            steps.append(Step("python", body))
            continue
        for chunk in re.split(r"^\$ ", body.replace("\\\n", " "), flags=re.M)[1:]:
            command, _, shown = chunk.partition("\n")
            steps.append(Step("sh", command.split(" #")[0].strip(), shown))
    return steps


@dataclass
class Stack:
    clone: Path
    env: dict[str, str]
    nats: str
    gateway: str
    proc: subprocess.Popen[bytes]
    log: Path

    def wait_serving(self, timeout: float) -> None:
        worker_log = self.clone / "var" / "logs" / "worker-default.log"
        deadline = time.monotonic() + timeout
        while not (worker_log.is_file() and b"serving pool" in worker_log.read_bytes()):
            assert self.proc.poll() is None, f"make up exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, (
                f"no worker serving after {timeout:.0f} s:\n{self.log.read_text()[-3000:]}"
            )
            time.sleep(1)

    def sh(self, command: str, **env: str) -> str:
        code, out, err = _run(["bash", "-c", command], cwd=self.clone, env={**self.env, **env})
        assert code == 0, f"{command!r} failed ({code}):\n{out}\n{err}"
        return out

    def python(self, program: str) -> str:
        code, out, err = _run(["./costwise", "python", "-"], cwd=self.clone, env=self.env, stdin=program)
        assert code == 0, f"the README's program failed:\n{program}\n{out}\n{err}"
        return out


def _run(argv: list[str], *, cwd: Path, env: dict[str, str], stdin: str | None = None) -> tuple[int, str, str]:
    """Run a command in a session of its own: one that hangs is killed with everything it started."""
    with subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(stdin, timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            err += "\n(killed after 300 s)"
        return proc.returncode, out, err


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """``make up`` in a fresh clone of this repository's HEAD, with a PATH that has no uv and no nats-server."""
    base = tmp_path_factory.mktemp("first-hour")
    clone = base / "costwise"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, env={**os.environ, "PATH": PATH})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COSTWISE_", "VIRTUAL_ENV", "UV"))}
    env["PATH"] = PATH
    for tool in ("uv", "nats-server", "costwise"):
        assert subprocess.run(["bash", "-c", f"command -v {tool}"], env=env).returncode != 0, f"{tool} is on {PATH}"
    nats, gateway, tracing = free_port(), free_port(), free_port()
    args = f"ARGS=--port {nats} --gateway-port {gateway} --tracing-port {tracing}"
    log = base / "make-up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["make", "up", args], cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    env["COSTWISE_NATS_URL"] = f"nats://127.0.0.1:{nats}"  # the one thing a reader of the banner would set
    running = Stack(clone, env, f"127.0.0.1:{nats}", f"127.0.0.1:{gateway}", proc, log)
    try:
        yield running
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, as the README says
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_the_readme_is_parsed_into_the_steps_a_reader_sees() -> None:
    steps = readme_steps(README.read_text())
    commands = [s.text for s in steps if s.kind == "sh"]
    assert "./costwise watch --tenant demo" in commands
    assert any(c.startswith("curl ") and "-d '{" in c for c in commands), "the curl command's continuation lines"
    assert sum(s.kind == "python" for s in steps) >= 2
    assert set(NOT_RUN) <= set(commands), "a NOT_RUN entry names a command the README no longer has"


@pytest.mark.timeout(1200)
def test_every_readme_command_succeeds_on_make_up_in_a_fresh_clone(stack: Stack) -> None:
    stack.wait_serving(timeout=600)
    reader = Reader(stack)
    watch = subprocess.Popen(
        ["./costwise", "watch", "--tenant", "demo"], cwd=stack.clone, env=stack.env, stdout=subprocess.PIPE, text=True
    )
    try:
        for step in readme_steps((stack.clone / "README.md").read_text()):  # the clone's, as its reader sees it
            reader.do(step)
        reader.finish()
    finally:
        watch.send_signal(signal.SIGINT)
        watched = watch.communicate(timeout=30)[0]
    assert watched.count('"type":"result.v1"') >= 3, watched  # every published result, as it landed


class Reader:
    """Follows the README top to bottom, filling in what earlier commands printed."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.first_request_id = ""
        self.semantic_hit_id = ""
        self.key, self.key_id = "", ""
        self.deferred: list[Step] = []
        self.last_program = ""

    def do(self, step: Step) -> None:
        if step.kind == "python":
            self._python(step.text)
        elif step.text in NOT_RUN or step.text == "./costwise watch --tenant demo":  # watch runs beside the rest
            pass
        elif "gateway keys revoke" in step.text:
            self.deferred.append(step)  # the README revokes the key before showing how to use it
        else:
            self._sh(step)

    def finish(self) -> None:
        for step in self.deferred:
            self._sh(step)
        readme = (self.stack.clone / "README.md").read_text()
        curl = next(s.text for s in readme_steps(readme) if s.text.startswith("curl"))
        revoked = self.stack.sh(self._fill(curl), KEY=self.key)
        assert "error" in json.loads(revoked), f"the revoked key still works: {revoked}"

    def _sh(self, step: Step) -> None:
        out = self.stack.sh(self._fill(step.text), KEY=self.key)
        for field, value in SHOWN.findall(step.shown):
            assert f'"{field}":"{value}"' in out, f"{step.text}: the README shows {field}={value}, got:\n{out}"
        if "publish" in step.text and not self.first_request_id:
            self.first_request_id = out.split()[0]
        if "publish" in step.text and '"source":"cache_semantic"' in out:
            self.semantic_hit_id = out.split()[0]
        if "gateway keys create" in step.text:
            self.key_id, self.key = _printed("key id", out), _printed("key", out)
        if "webhooks secret create" in step.text:
            assert "whsec_" in out
        if step.text.startswith("curl"):
            assert json.loads(out)["choices"][0]["message"]["content"], out

    def _python(self, program: str) -> None:
        if not re.search(r"^(import|from) ", program, flags=re.M):  # it goes on from the block before it
            program = self.last_program + program
        self.last_program = program
        program = program.replace(README_NATS, self.stack.nats).replace(README_GATEWAY, self.stack.gateway)
        if "api_key=KEY" in program:
            program = f"KEY = {self.key!r}\n{program}"
        out = self.stack.python(program)
        assert out.strip(), f"the README's program printed nothing:\n{program}"
        if "costwise.client" in program:
            assert out.startswith("ok "), out  # print(result.status, result.output.text)

    def _fill(self, command: str) -> str:
        command = re.sub(r"\[(--[^\]]*)\]", r"\1", command)  # the optional options, included
        # R: a request whose answer was cached (invalidate), or one a cache hit answered (cache wrong).
        r = self.semantic_hit_id if "cache wrong" in command else self.first_request_id
        command = command.replace("--request-id R", f"--request-id {r}")
        command = command.replace(README_KEY_ID, self.key_id).replace(README_GATEWAY, self.stack.gateway)
        return command.replace(README_NATS, self.stack.nats)


def _printed(label: str, out: str) -> str:
    """The value a CLI printed as ``label: value``."""
    found = re.search(rf"^{label}:\s*(\S+)", out, flags=re.M)
    assert found, f"no {label!r} in:\n{out}"
    return found.group(1)
