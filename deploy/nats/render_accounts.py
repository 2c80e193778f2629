"""Render compose's ``deploy/nats/accounts.conf``: ``costwise nats-config``'s users, passwords left to the environment.

    .venv/bin/python deploy/nats/render_accounts.py > deploy/nats/accounts.conf

The users and their permissions are exactly what ``costwise nats-config --tenants example`` generates (the same
functions render them); only each password is written as a nats.conf variable, ``$COSTWISE_NATS_PASSWORD_<USER>``
(the variable the CLI itself reads), which nats-server resolves from its environment at start. compose.yaml sets
those variables on the NATS containers and puts the same values in each service's NATS URL, with dev-only
defaults. ``tests/test_deploy.py`` checks that the committed file is this script's output.
"""

from __future__ import annotations

import re
import sys

from costwise.cli._nats_config import render, service_users, tenant_user

TENANTS = ("example",)  # compose's example tenant: `tenant-example` may publish only requests for `example`
_MARK = "@@"


class _VariableRefs(dict[str, str]):
    """An environment in which every password variable is "set" to a marker naming that variable."""

    def get(self, key: str, default: object = None) -> str:  # type: ignore[override]
        return f"{_MARK}{key}{_MARK}"


def accounts_conf() -> str:
    """The accounts section with every password a ``$VARIABLE`` reference instead of a literal."""
    refs = _VariableRefs()
    users = service_users(refs) + [tenant_user(t, refs) for t in TENANTS]
    text = render(users, system_password=refs.get("COSTWISE_NATS_PASSWORD_SYS"))
    # A quoted string is a literal in nats.conf; a bare $NAME is a variable (looked up in the environment).
    text = re.sub(rf'"{_MARK}([A-Z0-9_]+){_MARK}"', r"$\1", text)
    head = "# compose's NATS users: rendered by deploy/nats/render_accounts.py (do not edit); passwords from the env.\n"
    return head + text.removeprefix(text.splitlines()[0] + "\n")


if __name__ == "__main__":
    sys.stdout.write(accounts_conf())
