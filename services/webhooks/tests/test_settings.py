"""Settings, secrets and the retry schedule (no network)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from costwise.settings import SettingsError, load
from costwise.webhooks import Signer, WebhooksSettings
from costwise.webhooks.retry import next_delay
from costwise.webhooks.settings import load_secrets


def test_secrets_come_from_env_and_file_and_are_never_printed(tmp_path: Path, new_secret) -> None:  # type: ignore[no-untyped-def]
    from_env, from_file = new_secret(), new_secret()
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"beta": [from_file]}))
    env = {"COSTWISE_WEBHOOKS_SECRETS": json.dumps({"acme": [from_env]}), "COSTWISE_WEBHOOKS_SECRETS_FILE": str(path)}
    settings = load(WebhooksSettings, "COSTWISE_WEBHOOKS_", env)
    keys = load_secrets(settings)
    assert set(keys) == {"acme", "beta"}
    for text in (repr(settings), str(settings), repr(Signer(keys))):
        assert from_env not in text and from_file not in text and from_env[6:] not in text


@pytest.mark.parametrize(
    "secrets",
    [{"acme": ["not-a-secret"]}, {"acme": []}, {"acme": ["whsec_a", "whsec_b", "whsec_c"]}, {"a.b": ["whsec_AAAA"]}],
)
def test_bad_secrets_fail_at_start_without_echoing_them(secrets: dict[str, list[str]]) -> None:
    with pytest.raises(SettingsError, match=r"(?i)secrets") as bad:
        load(WebhooksSettings, "COSTWISE_WEBHOOKS_", {"COSTWISE_WEBHOOKS_SECRETS": json.dumps(secrets)})
    assert not any(s in str(bad.value) for values in secrets.values() for s in values)


def test_a_secret_that_is_not_base64_fails_at_start() -> None:
    with pytest.raises(ValueError, match="tenant 'acme'"):
        load_secrets(WebhooksSettings(secrets={"acme": ["whsec_abc"]}))


def test_backoff_doubles_up_to_the_cap_and_jitter_only_shortens() -> None:
    settings = WebhooksSettings(retry_initial_s=5, retry_max_s=3600, retry_jitter=0.2)
    nominal = [next_delay(settings, n, lambda: 0.0) for n in range(1, 13)]
    assert nominal[:4] == [5, 10, 20, 40] and nominal[-1] == 3600 and max(nominal) == 3600
    assert next_delay(settings, 10_000, lambda: 0.0) == 3600  # no overflow far out
    rng = random.Random(1).random
    assert all(0.8 * d <= next_delay(settings, n, rng) <= d for n, d in enumerate(nominal, start=1))


def test_the_first_delay_cannot_exceed_the_cap() -> None:
    with pytest.raises(SettingsError, match="retry_initial_s"):
        load(WebhooksSettings, "X_", {"X_RETRY_INITIAL_S": "10", "X_RETRY_MAX_S": "5"})
