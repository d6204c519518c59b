"""Health scores (contract section 8): pure functions from an account and health.yaml to a score.

Scoring:
- Each metric's `value` expression runs in the expression sandbox with the account scope of
  contract section 2: `account`, `contacts`, `now` and `today` (no `event`, no `run`).
- Points scale linearly from `bad` (0 points) to `good` (the metric's weight) and are clamped to
  that range, so a metric where less is better simply has `good < bad`.
- The score is points / total weight × 100, rounded half up (62.5 gives 63, as a person rounds;
  Python's `round` would give 62). Tiers: green when score >= `tiers.green`, yellow when
  >= `tiers.yellow`, else red.
- A metric is *missing* when its expression gives none (an unreported metric) or something that
  is not a finite number, or fails on a none or a division by zero (no licensed seats): it
  scores zero points and shows in the breakdown as
  ``{"value": None, "points": 0, "weight": 30, "missing": True}``. A missing metric therefore
  pulls the score down visibly instead of being quietly left out of the total weight.

Changes (used by the recompute in `activities/health.py`):
- A recompute emits `health.changed` when the score or the tier differs from the account's
  previous score: its latest stored score, else the `health` of its document (e.g. imported from
  a CRM). A tier change without a score change (tiers edited in health.yaml) is a change.
- The first score of an account, with neither, is emitted with `previous_score` and
  `previous_tier` none (unless the recompute was started with ``emit_first=False``). So a
  trigger such as ``event.data.score < 50 and event.data.previous_score >= 50`` does not fire
  on a first score (comparing none fails and the trigger does not match), while
  ``event.data.previous_score is none`` selects first scores on purpose.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from touchpoint.dsl import expressions as ex
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.health_models import HealthResult
from touchpoint.dsl.runtime import build_context
from touchpoint.dsl.workspace import HealthMetric, HealthModel, HealthTiers

__all__ = ["HealthResult", "is_change", "metric_points", "moved_by", "round_half_up", "score_account", "tier_of"]


def round_half_up(value: float) -> int:
    """Round to the nearest integer, halves away from zero's floor (62.5 -> 63)."""
    return math.floor(value + 0.5)


def tier_of(score: float, tiers: HealthTiers) -> str:
    """`green`, `yellow` or `red` for a score."""
    if score >= tiers.green:
        return "green"
    if score >= tiers.yellow:
        return "yellow"
    return "red"


def metric_points(value: float, metric: HealthMetric) -> float:
    """Points for a metric's value: 0 at `bad`, the weight at `good`, linear between, clamped."""
    fraction = (value - metric.bad) / (metric.good - metric.bad)
    return metric.weight * min(1.0, max(0.0, fraction))


def _number(value: Any) -> float | None:
    # Booleans count as 1/0 (a yes/no metric); anything else that is not a finite number is missing.
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _plain(value: float) -> int | float:
    # 30.0 prints as 30 in the breakdown (JSON and tables), 0.35 stays 0.35.
    return int(value) if float(value).is_integer() else value


def score_account(
    account: AccountDoc | Mapping[str, Any],
    model: HealthModel,
    now: datetime,
    *,
    timezone: str | None = None,
) -> HealthResult:
    """Score one account against a health model.

    Args:
        account: The account document (with its contacts), as a model or a mapping.
        model: The validated health.yaml.
        now: The recompute's clock (`now`, and `today` in the account's time zone).
        timezone: Zone for `today` when the account has none (the workspace's); default UTC.

    Returns:
        The rounded score, its tier and the breakdown by metric.

    Raises:
        pydantic.ValidationError: ``account`` is a mapping that is not a valid account document.
    """
    doc = account if isinstance(account, AccountDoc) else AccountDoc.model_validate(account)
    context = build_context(account=doc, event=None, run=None, now=now, tz=doc.timezone or timezone or "UTC")
    total = sum(metric.weight for metric in model.metrics)
    earned = 0.0
    breakdown: dict[str, dict[str, Any]] = {}
    for metric in model.metrics:
        try:
            value = _number(ex.evaluate(metric.value, context))
        except ex.ExpressionError:
            value = None  # e.g. none / seats, or a division by zero seats: missing, not an error
        points = 0.0 if value is None else metric_points(value, metric)
        earned += points
        breakdown[metric.id] = {
            "value": None if value is None else _plain(round(value, 4)),
            "points": _plain(round(points, 2)),
            "weight": _plain(metric.weight),
            "missing": value is None,
        }
    score = round_half_up(earned / total * 100)
    return HealthResult(score=score, tier=tier_of(score, model.tiers), breakdown=breakdown)


def is_change(previous_score: float | None, previous_tier: str | None, result: HealthResult) -> bool:
    """Whether a new score is a change worth `health.changed` (see the module docs)."""
    if previous_score is None and previous_tier is None:
        return True
    return previous_score != result.score or previous_tier != result.tier


def moved_by(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> dict[str, float]:
    """Metrics whose points changed between two breakdowns: metric id -> change in points."""
    moved: dict[str, float] = {}
    for name, item in after.items():
        old = (before or {}).get(name) or {}
        delta = round(float(item.get("points") or 0) - float(old.get("points") or 0), 2)
        if delta:
            moved[name] = _plain(delta)
    return moved
