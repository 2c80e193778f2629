from __future__ import annotations

import pytest

from costwise.gateway import GatewaySettings
from costwise.settings import SettingsError, load


def test_settings_come_from_the_environment_and_bad_ones_are_named() -> None:
    env = {"COSTWISE_GATEWAY_PORT": "9000", "COSTWISE_GATEWAY_MAX_BODY_BYTES": "65536"}
    settings = load(GatewaySettings, "COSTWISE_GATEWAY_", env)
    assert (settings.port, settings.max_body_bytes) == (9000, 65536)
    with pytest.raises(SettingsError, match="COSTWISE_GATEWAY_MAX_BODY_BYTES"):
        load(GatewaySettings, "COSTWISE_GATEWAY_", {"COSTWISE_GATEWAY_MAX_BODY_BYTES": str(64 << 20)})
    with pytest.raises(SettingsError, match="must not exceed max_timeout_s"):
        load(GatewaySettings, "COSTWISE_GATEWAY_", {"COSTWISE_GATEWAY_DEFAULT_TIMEOUT_S": "900"})
