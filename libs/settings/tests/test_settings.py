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


class WithNats(msgspec.Struct, frozen=True, kw_only=True):
    nats_url: str = "nats://127.0.0.1:4222"
    url: str = "x"


def test_one_costwise_nats_url_reaches_every_service_unless_its_own_variable_says_otherwise() -> None:
    shared = {"COSTWISE_NATS_URL": "nats://10.0.0.1:4222", "COSTWISE_URL": "not shared"}
    assert load(WithNats, "COSTWISE_BILLING_", shared) == WithNats(nats_url="nats://10.0.0.1:4222")
    own = {**shared, "COSTWISE_BILLING_NATS_URL": "nats://10.0.0.2:4222"}
    assert load(WithNats, "COSTWISE_BILLING_", own).nats_url == "nats://10.0.0.2:4222"
