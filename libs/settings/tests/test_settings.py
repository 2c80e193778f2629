from __future__ import annotations

from typing import Annotated

import msgspec
import pytest

from costwise.settings import SettingsError, load


class Demo(msgspec.Struct, frozen=True, kw_only=True):
    url: str = "nats://127.0.0.1:4222"
    ack_wait_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    spot: bool = False
    routes: dict[str, str] = msgspec.field(default_factory=dict)


def test_defaults_and_env_values_are_parsed() -> None:
    s = load(Demo, "X_", {"X_ACK_WAIT_S": "2.5", "X_SPOT": "true", "X_ROUTES": '{"auto": "p1"}', "OTHER": "1"})
    assert s == Demo(ack_wait_s=2.5, spot=True, routes={"auto": "p1"})


@pytest.mark.parametrize("env", [{"X_ACK_WAIT_S": "-1"}, {"X_ACK_WAIT_S": "soon"}, {"X_SPOT": "maybe"}])
def test_bad_values_name_the_variable(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match=next(iter(env))):
        load(Demo, "X_", env)
