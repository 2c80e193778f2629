"""A Dockerfile read as data, for the checks that need no Docker engine (tests/test_deploy.py, test_images.py)."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["dockerfile_instructions", "dockerfile_stages"]


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(ins.upper(), rest) for ins, _, rest in (ln.partition(" ") for ln in lines if ln and ln[0] != "#")]


def dockerfile_stages(path: Path) -> dict[str, str]:
    """Stage name -> its instructions, one per line (comments dropped); ``""`` holds what precedes the first."""
    bodies: dict[str, list[str]] = {}
    current = ""
    for ins, rest in dockerfile_instructions(path):
        if ins == "FROM":
            current = rest.split()[-1]
        bodies.setdefault(current, []).append(f"{ins} {rest}")
    return {name: "\n".join(lines) for name, lines in bodies.items()}
