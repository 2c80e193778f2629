"""Fuzzes the gateway at $FUZZ_BASE_URL with the key in $FUZZ_KEY and prints the failures as one JSON list.

Run by test_fuzz.py in a process of its own: hypothesis raises the interpreter's recursion limit while a test
runs, and CPython 3.11.7 then fails to compile a module imported meanwhile in another thread ("SystemError: AST
constructor recursion depth mismatch", cpython gh-106905), which a pytest run importing schemathesis lazily hit.
"""

from __future__ import annotations

import itertools
import json
import os

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Flaky
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Ok

# How the gateway refuses invalid data: 400, or 413 for a body over the size limit (refused before parsing);
# 401 when the fuzzer drops the key. Valid data may meet a 422 too: the fuzzer sends one Idempotency-Key
# ("0", say) with many bodies, and the gateway refuses a key reused with another body; and a 400: a schema-valid
# callback_url is refused when it cannot be delivered (the tenant has no webhook secret, the host does not resolve
# or is not public), which only the server can know.
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "negative_data_rejection": {"expected-statuses": ["400", "401", "404", "413"]},
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "3xx", "400", "401", "403", "404", "409", "422", "429", "5xx"]
            },
        }
    }
)
EXAMPLES = 40  # per operation and mode (valid, invalid): bounded so the whole fuzz stays well under a minute here


def fuzz(base_url: str, key: str) -> list[str]:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=CONFIG)
    auth = {"Authorization": f"Bearer {key}"}
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]
    assert len(operations) == 6, "every operation of the document loads"
    for operation, mode in itertools.product(operations, GenerationMode):

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=base_url, headers=auth)

        for attempt in range(2):
            try:
                check()
            except Flaky as exc:
                # A failure hypothesis could not reproduce on replay is the fuzzer's own; a real server error
                # reproduces, so one retry tells them apart.
                if attempt:
                    failures.append(f"{operation.label} ({mode.value} data): {exc}")
                continue
            except Exception as exc:  # every operation is fuzzed; all failures reported together
                failures.append(f"{operation.label} ({mode.value} data): {exc}")
            break
    return failures


if __name__ == "__main__":
    print(json.dumps(fuzz(os.environ["FUZZ_BASE_URL"], os.environ["FUZZ_KEY"])))
