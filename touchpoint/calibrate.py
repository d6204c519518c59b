"""`touchpoint health calibrate`: which metrics predict retention, and the weights they suggest.

Inputs: outcomes per account (`retained`, `expanded`, `contracted` or `churned`, with a date) and
the store's `account_history` (every change of an account's ARR, seats, segment and metrics).
For each outcome, the account as it was `horizon` before it (its latest history row then) gives
the features: each `health.yaml` metric's `value` (missing counts as 0, as the score counts it)
and each raw `account.metrics` entry no health metric reads directly (`metrics.<name>`), plus
the score the current `health.yaml` gave it. The label is a good outcome (retained or expanded)
against a bad one (contracted or churned).

The model is an L2-regularised logistic regression (scikit-learn) on standardised features,
fitted on 70% of the accounts (stratified, seeded); its effects are log-odds per standard
deviation, with 95% intervals from refitting on bootstrap resamples of the training accounts. A
metric *matters* when its interval leaves out zero. The held-out 30% give the AUC of the current
health score and of the suggested one. Suggested weights follow each metric's effect over its
scoring range (bad to good), keep the current total weight, drop metrics that do not matter or
push the wrong way, and add raw metrics that matter (good and bad at their 90th and 10th
percentiles, in the direction of their effect). They are shown as a diff of `health.yaml`,
never written.
"""

from __future__ import annotations

import csv
import difflib
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from touchpoint.dsl import expressions as ex
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.errors import ContractError, Problem
from touchpoint.dsl.runtime import build_context
from touchpoint.dsl.workspace import HealthModel

OUTCOMES = {"retained": 1, "expanded": 1, "contracted": 0, "churned": 0}
MIN_OUTCOMES = 40
MIN_EACH = 10
BOOTSTRAPS = 200


class CalibrationRefused(ValueError):
    """Too few usable outcomes to say anything (the message says how many there were)."""


@dataclass(frozen=True)
class Outcome:
    account_id: str
    outcome: str
    on: date


@dataclass
class Sample:
    account_id: str
    good: int
    features: dict[str, float]
    score: float


@dataclass
class Effect:
    """One feature: its effect (log-odds per standard deviation) with a 95% interval."""

    name: str
    effect: float
    low: float
    high: float
    matters: bool
    current_weight: float | None
    suggested_weight: float | None


@dataclass
class Calibration:
    samples: int
    good: int
    bad: int
    skipped: dict[str, int]
    effects: list[Effect]
    auc_current: float
    auc_suggested: float
    auc_model: float
    diff: str
    added: list[dict[str, Any]] = field(default_factory=list)
    suggested_text: str = ""
    """The whole suggested health.yaml (what the diff leads to)."""


def read_outcomes(path: Path) -> list[Outcome]:
    """A CSV with `account_id`, `outcome` and `date` columns (header first).

    Raises:
        ContractError: every bad row as `file:line: column: message`.
    """
    problems: list[Problem] = []
    found: list[Outcome] = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("account_id", "outcome", "date") if c not in (reader.fieldnames or [])]
        if missing:
            raise ContractError([Problem(str(path), 1, "", f"missing column(s) {', '.join(missing)}: expected account_id,outcome,date")])
        for row in reader:
            line = reader.line_num
            outcome = (row["outcome"] or "").strip().lower()
            if outcome not in OUTCOMES:
                problems.append(Problem(str(path), line, "outcome", f"expected one of {', '.join(OUTCOMES)}, found {row['outcome']!r}"))
                continue
            try:
                on = date.fromisoformat((row["date"] or "").strip()[:10])
            except ValueError:
                problems.append(Problem(str(path), line, "date", f"expected a date such as 2026-06-30, found {row['date']!r}"))
                continue
            if not (row["account_id"] or "").strip():
                problems.append(Problem(str(path), line, "account_id", "required"))
                continue
            found.append(Outcome(row["account_id"].strip(), outcome, on))
    if problems:
        raise ContractError(problems)
    return found


def parse_horizon(value: str) -> tuple[int, int]:
    """`12mo`, `6mo`, `1y`, `90d` or `8w` as (months, days).

    Raises:
        ValueError: for anything else.
    """
    found = re.match(r"^(\d+)(mo|y|w|d)$", value.strip())
    if not found or int(found[1]) == 0:
        raise ValueError(f"--horizon {value!r}: expected a number and a unit such as 12mo, 1y, 90d or 8w")
    n, unit = int(found[1]), found[2]
    return {"mo": (n, 0), "y": (12 * n, 0), "w": (0, 7 * n), "d": (0, n)}[unit]


def before(on: date, horizon: tuple[int, int]) -> datetime:
    """The moment ``horizon`` before midnight (UTC) of ``on``."""
    months, days = horizon
    year, month = divmod(on.year * 12 + on.month - 1 - months, 12)
    day = min(on.day, [31, 29 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month])
    return datetime.combine(date(year, month + 1, day) - timedelta(days=days), time(0), tzinfo=UTC)


def samples(rows: Sequence[Any], outcomes: Sequence[Outcome], model: HealthModel, horizon: tuple[int, int]) -> tuple[list[Sample], Counter[str]]:
    """One sample per outcome with history far enough back; the others counted by reason."""
    from touchpoint.health import score_account

    by_account: dict[str, list[Any]] = {}
    for row in rows:
        by_account.setdefault(row.account_id, []).append(row)
    # Raw metrics a health metric already reads (`account.metrics.x / account.seats.licensed`)
    # are in the model through it.
    read = {name for m in model.metrics for name in re.findall(r"account\.metrics\.([A-Za-z_][A-Za-z0-9_]*)", m.value)}
    raw = sorted({k for row in rows for k in (row.metrics or {})} - read)
    out: list[Sample] = []
    skipped: Counter[str] = Counter()
    for item in outcomes:
        moment = before(item.on, horizon)
        history = [r for r in by_account.get(item.account_id, []) if r.at <= moment]
        if not history:
            skipped["no history that far back" if item.account_id in by_account else "unknown account"] += 1
            continue
        row = history[-1]
        doc = AccountDoc(id=item.account_id, name=item.account_id, arr=row.arr, segment=row.segment, seats={"licensed": row.seats_licensed, "active": row.seats_active}, metrics=_numbers(row.metrics))
        context = build_context(account=doc, event=None, run=None, now=moment, tz="UTC")
        features = {m.id: _value(m.value, context) for m in model.metrics}
        features.update({f"metrics.{k}": _number(doc.metrics.get(k)) for k in raw})
        out.append(Sample(item.account_id, OUTCOMES[item.outcome], features, score_account(doc, model, moment).score))
    return out, skipped


def _numbers(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    return {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _value(source: str, context: Mapping[str, Any]) -> float:
    try:
        return _number(ex.evaluate(source, context))
    except ex.ExpressionError:
        return 0.0  # none / seats, or no seats: missing, as the score counts it


def calibrate(found: Sequence[Sample], model: HealthModel, health_text: str, *, skipped: Mapping[str, int] | None = None, seed: int = 7) -> Calibration:
    """Fit, test and suggest (see the module docs).

    Raises:
        CalibrationRefused: fewer than `MIN_OUTCOMES` samples, or fewer than `MIN_EACH` of a kind.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    good = sum(s.good for s in found)
    bad = len(found) - good
    if len(found) < MIN_OUTCOMES or min(good, bad) < MIN_EACH:
        lost = ", ".join(f"{n} {reason}" for reason, n in sorted((skipped or {}).items()))
        raise CalibrationRefused(
            f"calibration needs at least {MIN_OUTCOMES} outcomes with metric history before them, {MIN_EACH} good "
            f"(retained, expanded) and {MIN_EACH} bad (contracted, churned): found {len(found)} ({good} good, {bad} bad)"
            + (f"; left out: {lost}" if lost else "")
        )
    names = list(found[0].features)
    x = np.array([[s.features[n] for n in names] for s in found], dtype=float)
    y = np.array([s.good for s in found])
    scores = np.array([s.score for s in found], dtype=float)
    train, test = train_test_split(np.arange(len(found)), test_size=0.3, random_state=seed, stratify=y)
    mean, std = x[train].mean(axis=0), x[train].std(axis=0)
    std[std == 0] = 1.0
    z = (x - mean) / std
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(seed)
    boot = []
    with threadpool_limits(1):  # small fits: BLAS threads only fight each other (5x slower on 2 cores)
        fit = LogisticRegression(C=1.0, max_iter=1000).fit(z[train], y[train])
        for _ in range(BOOTSTRAPS):
            pick = rng.choice(train, size=len(train), replace=True)
            if len(set(y[pick])) == 2:
                boot.append(LogisticRegression(C=1.0, max_iter=1000).fit(z[pick], y[pick]).coef_[0])
    low, high = np.percentile(np.array(boot), [2.5, 97.5], axis=0)
    coef = fit.coef_[0]
    raw_coef = coef / std  # log-odds per unit of the metric
    current = {m.id: m.weight for m in model.metrics}
    total = sum(current.values())
    matters = [bool(lo > 0 or hi < 0) for lo, hi in zip(low, high, strict=True)]
    pull: dict[str, float] = {}
    added: list[dict[str, Any]] = []
    for i, name in enumerate(names):
        metric = next((m for m in model.metrics if m.id == name), None)
        if metric is not None:
            gain = raw_coef[i] * (metric.good - metric.bad)
            pull[name] = float(gain) if matters[i] and gain > 0 else 0.0
        elif matters[i]:
            p10, p90 = (float(v) for v in np.percentile(x[train, i], [10, 90]))
            if p90 > p10:
                good_at, bad_at = (p90, p10) if coef[i] > 0 else (p10, p90)
                pull[name] = float(abs(raw_coef[i]) * (p90 - p10))
                added.append({"id": name.removeprefix("metrics.").replace(".", "_"), "value": f"account.metrics.{name.removeprefix('metrics.')}", "good": _round(good_at), "bad": _round(bad_at), "feature": name})
    scale = total / sum(pull.values()) if sum(pull.values()) > 0 else 0.0
    weights = {name: max(1.0, round(value * scale)) if value > 0 else 0.0 for name, value in pull.items()}
    for item in added:
        item["weight"] = weights[item.pop("feature")]
    effects = [
        Effect(name, round(float(coef[i]), 3), round(float(low[i]), 3), round(float(high[i]), 3), matters[i], current.get(name), weights.get(name, 0.0 if name in current else None))
        for i, name in enumerate(names)
    ]
    suggested = HealthModel(
        schedule=model.schedule,
        tiers=model.tiers,
        metrics=[m.model_copy(update={"weight": weights[m.id]}) for m in model.metrics if weights.get(m.id, 0) > 0] + [_metric(a) for a in added],
    ) if any(w > 0 for w in weights.values()) else model
    auc_current = float(roc_auc_score(y[test], scores[test]))
    auc_suggested = float(roc_auc_score(y[test], [_score_from_features(found[i].features, suggested) for i in test]))
    auc_model = float(roc_auc_score(y[test], fit.predict_proba(z[test])[:, 1]))
    text = suggested_health(health_text, model, weights, added) if suggested is not model else health_text
    diff = "".join(difflib.unified_diff(health_text.splitlines(keepends=True), text.splitlines(keepends=True), "health.yaml", "health.yaml (suggested)"))
    return Calibration(len(found), good, bad, dict(skipped or {}), effects, round(auc_current, 3), round(auc_suggested, 3), round(auc_model, 3), diff, added, text)


def _round(value: float) -> float:
    return float(f"{value:.3g}")


def _metric(item: Mapping[str, Any]) -> Any:
    from touchpoint.dsl.workspace import HealthMetric

    return HealthMetric(id=item["id"], value=item["value"], weight=item["weight"], good=item["good"], bad=item["bad"])


def _score_from_features(features: Mapping[str, float], model: HealthModel) -> float:
    """A health score from a sample's feature values (each metric's value is a feature)."""
    from touchpoint.health import metric_points

    total = sum(m.weight for m in model.metrics)
    earned = 0.0
    for metric in model.metrics:
        value = features.get(metric.id, features.get(f"metrics.{metric.value.removeprefix('account.metrics.')}", 0.0))
        earned += metric_points(value, metric)
    return earned / total * 100 if total else 0.0


def health_diff(text: str, model: HealthModel, weights: Mapping[str, float], added: Sequence[Mapping[str, Any]]) -> str:
    """A unified diff of ``text`` (health.yaml) to `suggested_health`."""
    suggested = suggested_health(text, model, weights, added)
    return "".join(difflib.unified_diff(text.splitlines(keepends=True), suggested.splitlines(keepends=True), "health.yaml", "health.yaml (suggested)"))


def suggested_health(text: str, model: HealthModel, weights: Mapping[str, float], added: Sequence[Mapping[str, Any]]) -> str:
    """``text`` (health.yaml) with the suggested weights: changed weights in place, metrics that do
    not matter removed (with the comment lines just above them), new ones added after the last."""
    from touchpoint.dsl.yamlpos import load_yaml

    _, positions, _ = load_yaml(text)
    lines = text.splitlines(keepends=True)
    starts = [positions.line_of(("metrics", i)) - 1 for i in range(len(model.metrics))]
    after_metrics = next((positions.keys[(key,)] - 1 for key in ("tiers", "schedule") if (key,) in positions.keys and positions.keys[(key,)] - 1 > starts[-1]), len(lines))
    ends = [*starts[1:], after_metrics]
    drop: set[int] = set()
    for i, metric in enumerate(model.metrics):
        end = ends[i]
        while end - 1 > starts[i] and _blank_or_comment(lines[end - 1]):
            end -= 1  # the comment lines above the next metric are the next metric's
        new = weights.get(metric.id, metric.weight)
        if new <= 0:
            first = starts[i]
            while first > 0 and lines[first - 1].strip().startswith("#"):
                first -= 1
            drop.update(range(first, end))
            continue
        weight_line = positions.line_of(("metrics", i, "weight")) - 1
        lines[weight_line] = re.sub(r"(weight:\s*)[0-9.]+", rf"\g<1>{_plain(new)}", lines[weight_line], count=1)
    indent = re.match(r"^(\s*)", lines[starts[-1]])[1] if starts else "  "  # type: ignore[index]
    insert_at = ends[-1] if ends else len(lines)
    while insert_at - 1 > starts[-1] and _blank_or_comment(lines[insert_at - 1]):
        insert_at -= 1
    extra = [
        f'{indent}- {{id: {a["id"]}, value: "{a["value"]}", weight: {_plain(a["weight"])}, good: {_plain(a["good"])}, bad: {_plain(a["bad"])}}}  # added by calibrate\n'
        for a in added
    ]
    kept = [line for n, line in enumerate(lines[:insert_at]) if n not in drop] + extra + [line for n, line in enumerate(lines[insert_at:], insert_at) if n not in drop]
    return "".join(kept)


def _blank_or_comment(line: str) -> bool:
    return not line.strip() or line.strip().startswith("#")


def _plain(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
