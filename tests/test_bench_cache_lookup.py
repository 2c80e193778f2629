"""The lookup benchmark runs end to end on a small index (real MiniLM, real Qdrant Edge); speed is not asserted."""

from __future__ import annotations

from costwise.bench import cache_lookup


async def test_every_setting_is_measured_against_one_index_and_summed_up_by_median() -> None:
    report = await cache_lookup.run([300], 24, 4, ["onnx-int8"], [1], [1, 2], repeats=2)

    settings = [(r["search_threads"], r["repeat"]) for r in report["rows"]]
    assert settings == [(1, 0), (2, 0), (1, 1), (2, 1)]  # alternated, not one setting's repeats back to back
    assert [m["search_threads"] for m in report["medians"]] == [1, 2]
    for row in report["rows"] + report["medians"]:
        assert row["entries"] == 300 and row["full_lookups_per_s"] > 0 and row["index_lookups_per_s"] > 0
        assert 0 < row["full_ms_p50"] <= row["full_ms_p99"]
