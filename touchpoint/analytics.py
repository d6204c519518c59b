"""A playbook's analytics: funnels, engagement and uplift (`touchpoint analytics`, `GET
/playbooks/{id}/analytics`, the console's playbook page; one function, `playbook_analytics`).

Every number is a sum over the rollups the store keeps current (`touchpoint/store/rollups.py`),
per enrollment day, so the answer costs a few small indexed reads at any volume:

- runs per version and per `split` variant: enrolled, held out, in flight, outcomes, goal rate
  (converted among the treated runs that ended);
- per step, runs that entered, passed, were skipped (an email step without recipients, a
  `wait_until` without a date) or failed it; a step whose `when` was false leaves no timeline
  line, so it is not counted as skipped;
- per email step, emails sent, held (for a send window, holiday or the cap) and not sent, then
  delivered, opened, clicked, bounced and unsubscribed (each email once per kind);
- the median time from the previous step, from a quarter-octave histogram (within about 9%);
- the goal rate of treated and held-out runs within the holdout's `for`, and the uplift.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from touchpoint.dsl.schema import Playbook, step_kind
from touchpoint.dsl.walk import all_steps, step_name
from touchpoint.store import GapRollup, RunRollup, StepRollup, repo
from touchpoint.store.rollups import bucket_middle

MIN_PER_CELL = 5
"""Each arm needs this many runs that reached the goal and this many that did not before the
uplift is stated: the usual n·p ≥ 5 and n·(1−p) ≥ 5 rule under which a difference of two
proportions is close enough to normal for its 95% interval to mean what it says."""

ENGAGEMENT = ("delivered", "opened", "clicked", "bounced", "unsubscribed")


class NotFound(LookupError):
    """No such playbook, or no such version of it, in the store."""


class Emails(BaseModel):
    """What became of an email step's emails (each email once per kind)."""

    sent: int = 0
    held: int = 0
    """Sent later than due: outside the send window, on a holiday, or over the frequency cap."""
    not_sent: int = 0
    """Failed, skipped (suppressed, no address) or uncertain."""
    delivered: int = 0
    opened: int = 0
    clicked: int = 0
    bounced: int = 0
    unsubscribed: int = 0


class StepReach(BaseModel):
    """How far runs got at one step: runs that entered, passed, were skipped or failed it."""

    step: str
    kind: str | None = None
    """The step's action (`email`, `wait`...), from the version's YAML."""
    entered: int = 0
    passed: int = 0
    skipped: int = 0
    failed: int = 0
    median_seconds_from_previous: float | None = None
    """From the run's previous step (or its start) to entering this one, within about 9%."""
    emails: Emails | None = None


class RunCounts(BaseModel):
    """Runs by state: every run is enrolled; held-out and in-flight runs are among them."""

    enrolled: int = 0
    held_out: int = 0
    in_flight: int = 0
    outcomes: dict[str, int] = Field(default_factory=dict)
    treated_ended: int = 0
    treated_converted: int = 0
    goal_rate: float | None = None
    """`treated_converted` / `treated_ended`: converted among the treated (not held-out) runs
    that ended; None before any ended."""


class VariantRuns(RunCounts):
    variant: str
    """`step=variant` (comma-separated for several splits); '' for runs before or without a split."""


class VersionAnalytics(RunCounts):
    version: str
    current: bool = False
    variants: list[VariantRuns] = Field(default_factory=list)
    steps: list[StepReach] = Field(default_factory=list)


class Arm(BaseModel):
    """One arm of the holdout comparison: ended runs, and those that converted within `for`."""

    runs: int = 0
    reached_goal: int = 0
    rate: float | None = None


class Uplift(BaseModel):
    """Treated minus held-out goal rate within `for`, in percentage points, with its 95% interval."""

    method: Literal["newcombe"] = "newcombe"
    treated: Arm = Field(default_factory=Arm)
    held_out: Arm = Field(default_factory=Arm)
    enough: bool = False
    points: float | None = None
    low: float | None = None
    high: float | None = None
    sentence: str = ""


class PlaybookAnalytics(BaseModel):
    """The whole answer of `touchpoint analytics --json` and `GET /playbooks/{id}/analytics`."""

    playbook: str
    since: dt.date | None = None
    version: str | None = None
    totals: RunCounts = Field(default_factory=RunCounts)
    versions: list[VersionAnalytics] = Field(default_factory=list)
    uplift: Uplift = Field(default_factory=Uplift)


def playbook_analytics(s: Session, playbook_id: str, *, since: dt.date | None = None, version: str | None = None) -> PlaybookAnalytics:
    """Funnels, engagement and uplift of a playbook's runs enrolled on or after ``since``.

    Raises:
        NotFound: the playbook was never deployed, or ``version`` is not one of its versions.
    """
    current = repo.get_deployment(s, "playbook", playbook_id)
    known = repo.playbook_versions(s, playbook_id)
    if not known:
        raise NotFound(f"no playbook {playbook_id!r} was ever deployed: `touchpoint deploy` publishes it")
    if version is not None and version not in known:
        raise NotFound(f"playbook {playbook_id!r} has no version {version!r}; its versions: {', '.join(known)}")

    def scope(model: type[RunRollup | StepRollup | GapRollup]) -> list[Any]:
        found: list[Any] = [model.playbook_id == playbook_id]
        if since is not None:
            found.append(model.day >= since)
        if version is not None:
            found.append(model.version == version)
        return found

    r = RunRollup
    runs = s.execute(
        select(r.version, r.variant, r.held_out, r.status, r.outcome, r.window, func.sum(r.runs))
        .where(*scope(r)).group_by(r.version, r.variant, r.held_out, r.status, r.outcome, r.window)
    ).all()
    steps = s.execute(
        select(StepRollup.version, StepRollup.step, StepRollup.metric, func.sum(StepRollup.count))
        .where(*scope(StepRollup)).group_by(StepRollup.version, StepRollup.step, StepRollup.metric)
    ).all()
    gaps = s.execute(
        select(GapRollup.version, GapRollup.step, GapRollup.bucket, func.sum(GapRollup.count))
        .where(*scope(GapRollup)).group_by(GapRollup.version, GapRollup.step, GapRollup.bucket)
    ).all()

    answer = PlaybookAnalytics(playbook=playbook_id, since=since, version=version)
    versions: dict[str, VersionAnalytics] = {}
    variants: dict[tuple[str, str], VariantRuns] = {}
    arms = {True: answer.uplift.held_out, False: answer.uplift.treated}
    for v, variant, held_out, status, outcome, window, n in runs:
        n = int(n or 0)
        if v not in versions:
            versions[v] = VersionAnalytics(version=v)
        if (v, variant) not in variants:
            variants[(v, variant)] = VariantRuns(variant=variant)
        for counts in (answer.totals, versions[v], variants[(v, variant)]):
            _count(counts, bool(held_out), status, outcome, n)
        if window != "none" and status == "ended":
            arms[bool(held_out)].runs += n
            arms[bool(held_out)].reached_goal += n if window == "reached" else 0
    for counts in (answer.totals, *versions.values(), *variants.values()):
        _goal_rate(counts)
    for (v, _), variant_runs in sorted(variants.items()):
        versions[v].variants.append(variant_runs)

    metrics: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    for v, step, metric, n in steps:
        metrics[v][step][metric] += int(n or 0)
    histograms: dict[str, dict[str, Counter[int]]] = defaultdict(lambda: defaultdict(Counter))
    for v, step, bucket, n in gaps:
        histograms[v][step][int(bucket)] += int(n or 0)
        versions.setdefault(v, VersionAnalytics(version=v))
    # The version asked for, else the current one, is shown even before any run took it.
    for v in [*metrics, *([version] if version else [current.version] if current else [])]:
        versions.setdefault(v, VersionAnalytics(version=v))
    for v, found in versions.items():
        found.current = current is not None and current.version == v
        deployed = repo.get_deployment(s, "playbook", playbook_id, v)
        playbook = Playbook.model_validate(deployed.content["playbook"]) if deployed else None
        found.steps = _steps(playbook, metrics[v], histograms[v])
    answer.versions = sorted(versions.values(), key=lambda x: (not x.current, known.index(x.version) if x.version in known else len(known)))
    _uplift(answer.uplift)
    return answer


def _count(counts: RunCounts, held_out: bool, status: str, outcome: str, n: int) -> None:
    counts.enrolled += n
    counts.held_out += n if held_out else 0
    counts.in_flight += n if status != "ended" else 0
    if outcome:
        counts.outcomes[outcome] = counts.outcomes.get(outcome, 0) + n
    if status == "ended" and not held_out:
        counts.treated_ended += n
        counts.treated_converted += n if outcome == "converted" else 0


def _goal_rate(counts: RunCounts) -> None:
    counts.goal_rate = counts.treated_converted / counts.treated_ended if counts.treated_ended else None


def _steps(playbook: Playbook | None, metrics: dict[str, Counter[str]], histograms: dict[str, Counter[int]]) -> list[StepReach]:
    """Each step of the version in the YAML's order (then any other step the counts name)."""
    kinds = {step_name(step, path): step_kind(step) for path, step in all_steps(playbook)} if playbook else {}
    names = [*kinds, *sorted(set(metrics) - set(kinds))]
    found = []
    for name in names:
        counts = metrics.get(name, Counter())
        reach = StepReach(
            step=name, kind=kinds.get(name), entered=counts["entered"], passed=counts["passed"],
            skipped=counts["skipped"], failed=counts["failed"], median_seconds_from_previous=_median(histograms.get(name, Counter())),
        )
        if reach.kind == "email" or any(m.startswith("email:") for m in counts):
            sent = counts["email:sent"]
            not_sent = sum(n for m, n in counts.items() if m.startswith("email:")) - sent
            reach.emails = Emails(sent=sent, held=counts["held"], not_sent=not_sent, **{m: counts[m] for m in ENGAGEMENT})
        found.append(reach)
    return found


def _median(histogram: Counter[int]) -> float | None:
    """The middle of the bucket holding the median (None without any run)."""
    total = sum(histogram.values())
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if total and seen * 2 >= total:
            return bucket_middle(bucket)
    return None


def _uplift(uplift: Uplift) -> None:
    """Fill in the rates, the difference and its interval, and the sentence that says it.

    The interval is Newcombe's hybrid score interval for a difference of two independent
    proportions (`statsmodels.stats.proportion.confint_proportions_2indep`, method 'newcombe'),
    built from each arm's Wilson interval: unlike the Wald interval it stays inside [-1, 1] and
    keeps close to its 95% coverage with the small, lopsided arms a 10% holdout gives.
    """
    treated, held = uplift.treated, uplift.held_out
    for arm in (treated, held):
        arm.rate = arm.reached_goal / arm.runs if arm.runs else None
    if not held.runs and not treated.runs:
        uplift.sentence = "no holdout to compare with: give the playbook a `holdout` to measure its uplift"
        return
    uplift.enough = all(MIN_PER_CELL <= arm.reached_goal <= arm.runs - MIN_PER_CELL for arm in (treated, held))
    if not uplift.enough:
        uplift.sentence = (
            f"not enough runs to tell yet: each arm needs {MIN_PER_CELL} ended runs that reached the goal within `for` "
            f"and {MIN_PER_CELL} that did not (treated {treated.reached_goal} of {treated.runs}, held out {held.reached_goal} of {held.runs})"
        )
        return
    from statsmodels.stats.proportion import confint_proportions_2indep

    low, high = confint_proportions_2indep(treated.reached_goal, treated.runs, held.reached_goal, held.runs, method="newcombe", compare="diff")
    assert treated.rate is not None and held.rate is not None
    uplift.points = round((treated.rate - held.rate) * 100, 1)
    uplift.low, uplift.high = round(float(low) * 100, 1), round(float(high) * 100, 1)
    direction = "more" if uplift.points >= 0 else "less"
    uplift.sentence = f"treated accounts reached the goal {abs(uplift.points):.1f} points {direction} often (95% CI {uplift.low:.1f} to {uplift.high:.1f})"
    if uplift.low <= 0 <= uplift.high:
        uplift.sentence += "; the interval includes no difference, so it may be chance"
