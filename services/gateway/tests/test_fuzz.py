"""schemathesis fuzzes every operation of the served OpenAPI document with valid and invalid data: no 5xx,
invalid data refused with a 4xx, every answer as documented (fuzz_run.py, in a process of its own)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from nats.js import JetStreamContext

from .conftest import responding

RUNNER = Path(__file__).with_name("fuzz_run.py")


async def test_schemathesis_finds_no_server_errors(
    base_url: str, tenant_key: tuple[str, str], js: JetStreamContext
) -> None:
    tenant, key = tenant_key
    env = {**os.environ, "FUZZ_BASE_URL": base_url, "FUZZ_KEY": key}  # not argv: a key stays out of ps
    async with responding(js, tenant):  # valid requests get answers, so a wait never times out
        fuzzer = await asyncio.create_subprocess_exec(
            sys.executable, str(RUNNER), env=env, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(fuzzer.communicate(), timeout=300)
    assert fuzzer.returncode == 0, "the fuzzer ran to the end"
    failures = json.loads(out.decode().strip().splitlines()[-1])
    assert not failures, "\n\n".join(failures)
