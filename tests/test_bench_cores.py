"""``costwise-bench ttft --engine-core``: vLLM's processes get a core to themselves, everything else the others.

Run in a process of its own: moving threads would otherwise move the test session's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, os, subprocess, sys, time
    from costwise.bench._cores import engine_core

    sleeper = [sys.executable, "-c", "import sys, time; sys.stdin.read()"]
    # vLLM names its processes VLLM::EngineCore and VLLM::Worker; a child renamed so stands in for one.
    engine = subprocess.Popen([sys.executable, "-c",
        "open('/proc/self/comm', 'w').write('VLLM::Worker'); import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    other = subprocess.Popen(sleeper, stdin=subprocess.PIPE)
    while open(f"/proc/{engine.pid}/comm").read().strip() != "VLLM::Worker":
        time.sleep(0.01)
    rest = engine_core()
    later = subprocess.Popen(sleeper, stdin=subprocess.PIPE)  # started after: inherits the others' cores
    print(json.dumps([sorted(rest), *(sorted(os.sched_getaffinity(p)) for p in (0, engine.pid, other.pid, later.pid))]))
    for p in (engine, other, later):
        p.stdin.close(); p.wait()
    """
)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_vllm_processes_get_a_core_of_their_own() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True)
    rest, here, engine, other, later = json.loads(out.stdout)
    assert engine == [0]
    assert 0 not in rest and here == other == later == rest
