"""Runs a forecast need not make twice: an account that would decide exactly as one already run.

A run is a deterministic function of its program, its start and events, and what it reads of
its account. The interpreter reads an account in two ways only:

- **directly**, for the shape of the run: the account's zone, country and locale; its contacts'
  roles, zones, countries and locales, and which of them share an address (with each other, the
  CSM, the owner or a literal `to:` address); the CSM's and the owner's addresses (task owners,
  `cc_csm`); and its id, through `split` variants. These make the account's **fingerprint**,
  with the run's start and trigger event;
- **through expressions** (`when`, `if`, `exit_when`, milestones, `set`, `to:` ...), which the
  host can watch (`Program.observe`).

So two accounts with the same fingerprint whose expressions all come out the same, each in the
context the run had at that point, make the same run. The first account of a fingerprint runs
in full while its **checks** are recorded: every expression that reads `account` or
`contacts` (or `run.id`, which differs per run), with the rest of its context and its outcome
(a value, or the error's text). A later account with that fingerprint is replayed: each check
is evaluated again with the later account in the recorded context, walking a tree of the
outcomes seen so far; if every outcome matches a recorded run, its counts are that run's; the
first outcome no run had sends the account through a run of its own, which is recorded as a
new branch. Expressions that read neither need no check: their context is the same on the
same branch.

The evaluations it replays are the interpreter's own (the same compiled expressions, the same
sandbox and bounds), so a replayed account is counted exactly as its own run would count it:
`tests/test_forecast.py` compares forecasts with and without replays, and with one
simulation per account. Replays are off when the events file changes accounts (`account:`
entries, `usage.reported`, `health.changed`) or names tasks by id: then every account runs.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from touchpoint.dsl import expressions as ex
from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.runtime import account_context
from touchpoint.dsl.schema import EmailStep, Playbook, TaskStep, is_address
from touchpoint.dsl.walk import all_steps, step_name
from touchpoint.dsl.workspace import Workspace
from touchpoint.engine.local import Scripted
from touchpoint.engine.people import variant_of

ACCOUNT_NAMES = frozenset({"account", "contacts"})
MAX_BRANCHES = 64
"""Recorded runs kept per fingerprint; past them, accounts of that fingerprint simply run."""

Outcome = tuple[bool, Any]
"""``(True, value)`` or ``(False, error text)``."""


@dataclass(frozen=True)
class Check:
    """An expression a run evaluated that reads the account, with the rest of its context."""

    source: str
    context: dict[str, Any]


_PEOPLE = ("\x00csm", "\x00owner")
"""Placeholders in a recorded run's counts for the account's CSM and owner addresses."""


@dataclass
class Leaf:
    """What one recorded run counted, and how it ended (the CSM and owner as placeholders)."""

    counts: list[tuple[tuple[int, str, str], int]]
    outcome: str
    warnings: frozenset[str]

    @classmethod
    def of(cls, account: AccountDoc, literal: tuple[str, ...], counts: dict[tuple[int, str, str], int], outcome: str, warnings: frozenset[str]) -> Leaf:
        """A run's counts with the account's CSM and owner addresses replaced by placeholders."""
        people = _people(account, literal)
        shown = [((day, kind, people.get(key, key)), n) for (day, kind, key), n in counts.items()]
        return cls(shown, outcome, warnings)

    def for_account(self, account: AccountDoc, literal: tuple[str, ...]) -> Leaf:
        """The counts as ``account`` makes them: its own CSM and owner."""
        back = {placeholder: email for email, placeholder in _people(account, literal).items()}
        if not back:
            return self
        return Leaf([((day, kind, back.get(key, key)), n) for (day, kind, key), n in self.counts], self.outcome, self.warnings)


def _people(account: AccountDoc, literal: tuple[str, ...]) -> dict[str, str]:
    """The account's CSM and owner addresses (as counts name them) and their placeholders
    (an address the playbook names itself keeps its own name: it is in the fingerprint)."""
    found: dict[str, str] = {}
    for who, placeholder in zip((account.csm, account.owner), _PEOPLE, strict=True):
        if who is not None and who.email and who.email not in found and who.email.lower() not in literal:
            found[who.email] = placeholder
    return found


@dataclass
class _Node:
    check: Check | None = None
    branches: list[tuple[Outcome, _Node]] = field(default_factory=list)
    leaf: Leaf | None = None


def replayable(events: Sequence[Scripted]) -> bool:
    """Whether runs may be replayed with these scripted events (none may change the account)."""
    for entry in events:
        if entry.account is not None or entry.type in ("usage.reported", "health.changed") or "task_id" in entry.data:
            return False
    return True


class Replays:
    """Recorded runs by fingerprint (one per worker process)."""

    def __init__(self, playbook: Playbook, workspace: Workspace) -> None:
        self.playbook = playbook
        self.splits = [
            (step_name(step, path), {k: v.weight for k, v in step.split.items()})
            for path, step in all_steps(playbook)
            if hasattr(step, "split")
        ]
        # Addresses the playbook names itself: whether an account's people share one matters.
        literal = [workspace.crm.fallback_owner or ""]
        for _, step in all_steps(playbook):
            if isinstance(step, EmailStep):
                literal.extend(t for t in step.email.to or [] if is_address(t))
            elif isinstance(step, TaskStep) and "@" in step.task.owner:
                literal.append(step.task.owner)
        self.literal = tuple(dict.fromkeys(a.lower() for a in literal if a))
        self.roots: dict[Hashable, _Node] = {}
        self.replayed = 0

    def fingerprint(self, account: AccountDoc, extra: Hashable) -> Hashable:
        """What the interpreter reads of ``account`` outside expressions (see the module docs)."""
        identity: dict[str, int] = {email: n for n, email in enumerate(self.literal)}

        def same_as(email: str | None) -> int | None:
            return identity.setdefault(email.lower(), len(identity)) if email else None

        contacts = tuple((same_as(c.email), c.role, c.locale, c.timezone, c.country) for c in account.contacts)
        # The CSM's and the owner's own addresses are not in it: counts name them through
        # placeholders (`_PEOPLE`), so one recorded run serves every CSM's accounts.
        people = tuple(
            (same_as(who.email), who.email if who.email and who.email.lower() in self.literal else None) if who is not None else None
            for who in (account.csm, account.owner)
        )
        variants = tuple(variant_of(weights, account.id, self.playbook.playbook, name) for name, weights in self.splits)
        return (account.timezone, account.country, account.locale, contacts, people, variants, extra)

    def replay(self, key: Hashable, account: AccountDoc, run_id: str) -> Leaf | None:
        """The recorded run ``account`` would repeat, or None (then it must run)."""
        node = self.roots.get(key)
        if node is None:
            return None
        view, contacts = account_context(account)
        # An expression that reads only the account has one outcome per account, wherever it is.
        known: dict[str, Outcome] = {}
        while node.check is not None:
            source = node.check.source
            found = known.get(source)
            if found is None:
                context = dict(node.check.context)
                context["account"], context["contacts"] = view, contacts
                if isinstance(context.get("run"), dict):
                    context["run"] = {**context["run"], "id": run_id}
                found = _evaluate(source, context)
                if _account_only(source):
                    known[source] = found
            node = next((child for outcome, child in node.branches if _same(outcome, found)), None)  # type: ignore[assignment]
            if node is None:
                return None
        if node.leaf is None:
            return None
        self.replayed += 1
        return node.leaf.for_account(account, self.literal)

    def record(self, key: Hashable, checks: list[tuple[Check, Outcome]], leaf: Leaf) -> None:
        """Keep a run made in full, as the branch of its checks' outcomes."""
        node = self.roots.setdefault(key, _Node())
        for check, outcome in checks:
            if node.leaf is not None or (node.check is not None and node.check.source != check.source):
                return  # cannot happen for a deterministic run; keep what is known
            if node.check is None:
                node.check = check
            child = next((c for o, c in node.branches if _same(o, outcome)), None)
            if child is None:
                if len(node.branches) >= MAX_BRANCHES:
                    return
                child = _Node()
                node.branches.append((outcome, child))
            node = child
        if node.check is None:
            node.leaf = leaf


class Recorder:
    """`Program.observe` for a run made in full: its checks, in order."""

    def __init__(self) -> None:
        self.checks: list[tuple[Check, Outcome]] = []

    def __call__(self, source: str, context: dict[str, Any], value: Any) -> None:
        if not _is_check(source):
            return
        # `now` and `today` are immutable; `run` and `event` hold dicts the run goes on changing.
        rest = {k: v if k in ("now", "today") else copy.deepcopy(v) for k, v in context.items() if k not in ACCOUNT_NAMES}
        outcome: Outcome = (False, str(value)) if isinstance(value, ex.ExpressionError) else (True, copy.deepcopy(value))
        self.checks.append((Check(source, rest), outcome))


@lru_cache(maxsize=4096)
def _is_check(source: str) -> bool:
    names = ex.root_names(source)
    if names is None or names & ACCOUNT_NAMES:
        return True
    return "run" in names and _reads_run_id(source)


@lru_cache(maxsize=4096)
def _account_only(source: str) -> bool:
    names = ex.root_names(source)
    return names is not None and names <= ACCOUNT_NAMES


def _reads_run_id(source: str) -> bool:
    """Whether ``source`` may read `run.id` (any use of `run` but a fixed field other than `id`)."""
    from jinja2 import nodes

    tree = ex.parse_expression(source)
    uses = sum(1 for n in tree.find_all(nodes.Name) if n.name == "run")
    safe = sum(1 for g in tree.find_all(nodes.Getattr) if isinstance(g.node, nodes.Name) and g.node.name == "run" and g.attr != "id")
    return uses != safe


def _evaluate(source: str, context: dict[str, Any]) -> Outcome:
    try:
        return True, ex.evaluate(source, context)
    except ex.ExpressionError as exc:
        return False, str(exc)


_SCALARS = frozenset({bool, int, str, type(None)})


def _same(a: Any, b: Any) -> bool:
    """Alike in every way a later step could tell: the same types all the way down (`1` and
    `True` lead to different runs), equal, and written the same (`-0.0` and `0.0` are equal but
    print differently; so do equal times in different zones)."""
    kind = type(a)
    if kind is not type(b):
        return False
    if kind in _SCALARS:
        return bool(a == b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    try:
        return bool(a == b) and repr(a) == repr(b)
    except Exception:  # a value that cannot compare: treat as different, the account runs
        return False
