"""The savings waterfall of a replay as a small standalone SVG (no plotting library): the no-lever baseline, each
lever's saving from billing's attribution as a step down (a negative one, re-prefill after preemption, as a step
up), and what was actually spent."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

__all__ = ["write_waterfall"]

LABELS = {
    "cache_exact": "exact cache",
    "cache_semantic": "semantic cache",
    "routing": "cascade / routing",
    "provider": "provider choice",
    "quantization": "quantization",
    "spot": "spot vs on demand",
    "resume_prefill": "re-prefill (preemption)",
}
_W, _ROW, _LEFT, _BAR = 760, 30, 190, 440


def write_waterfall(replay: dict[str, Any], path: Path) -> None:
    """Write ``replay``'s (the JSON object's) waterfall to ``path``."""
    baseline, actual = float(replay["cost_baseline_usd"]), float(replay["cost_actual_usd"])
    steps: list[tuple[str, float, float, str, str]] = [
        ("baseline (no levers)", 0.0, baseline, "#8c8c8c", f"${baseline:.4f}")
    ]
    level = baseline
    for lever, saved in replay["savings_by_lever"].items():
        saved = float(saved)
        shown = f"-${saved:.4f}" if saved >= 0 else f"+${-saved:.4f}"
        steps.append((LABELS.get(lever, lever), level - saved, level, "#2b8a3e" if saved >= 0 else "#c92a2a", shown))
        level -= saved
    steps.append(("actual", 0.0, actual, "#1c7ed6", f"${actual:.4f}"))
    scale = _BAR / max(baseline, 1e-12)
    height = _ROW * (len(steps) + 2)
    title = f"{replay.get('requests', '?')} requests: ${actual:.4f} vs ${baseline:.4f} baseline"
    title += f" (-{100 * float(replay.get('cost_reduction', 0)):.1f} %)"
    rows = [_row(i, *step, scale=scale) for i, step in enumerate(steps)]
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{height}" font-family="sans-serif" '
        f'font-size="13"><rect width="100%" height="100%" fill="white"/>'
        f'<text x="10" y="20" font-weight="bold">{escape(title)}</text>{"".join(rows)}</svg>\n'
    )
    path.write_text(svg)


def _row(i: int, label: str, low: float, high: float, colour: str, shown: str, *, scale: float) -> str:
    top = _ROW * (i + 1) + 10
    x0, x1 = _LEFT + min(low, high) * scale, _LEFT + max(low, high) * scale
    return (
        f'<text x="{_LEFT - 8}" y="{top + 17}" text-anchor="end">{escape(label)}</text>'
        f'<rect x="{x0:.1f}" y="{top + 4}" width="{max(x1 - x0, 1):.1f}" height="{_ROW - 8}" fill="{colour}"/>'
        f'<text x="{x1 + 6:.1f}" y="{top + 17}">{escape(shown)}</text>'
    )
