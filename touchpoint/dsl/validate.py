"""Load and validate a playbooks folder: every problem at once, each at its file and line.

`load_project(DIR)` reads `workspace.yaml`, `health.yaml` and every other top-level `*.yaml` as a
playbook, checks each against the schema, then checks what the schema cannot see: names used by
expressions and templates, email templates on disk, duplicate ids, `start` targets, roles, CRM
field names. `samples/` and `templates/` are not playbooks.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from touchpoint.dsl import draft_safety
from touchpoint.dsl import expressions as ex
from touchpoint.dsl.durations import format_duration
from touchpoint.dsl.errors import ContractError, Problem, hint
from touchpoint.dsl.located import validate_model
from touchpoint.dsl.schema import (
    INTERNAL_RECIPIENTS,
    SCHEDULE_STEP_KINDS,
    DateTrigger,
    DraftStep,
    EmailStep,
    EventTrigger,
    IfStep,
    NoteStep,
    Playbook,
    RepeatStep,
    SetStep,
    StartStep,
    StepBase,
    TaskStep,
    UpdateStep,
    WaitForStep,
    WaitUntilStep,
    WebhookStep,
    is_address,
    step_kind,
)
from touchpoint.dsl.templates import Templates
from touchpoint.dsl.templates import rel as _rel
from touchpoint.dsl.walk import all_steps, count_steps
from touchpoint.dsl.workspace import HealthModel, Workspace
from touchpoint.dsl.yamlpos import Path as YPath
from touchpoint.dsl.yamlpos import Positions, format_path, load_yaml

SPECIAL_FILES = ("workspace.yaml", "health.yaml")


@dataclass
class LoadedPlaybook:
    """A valid playbook with where it came from."""

    playbook: Playbook
    file: Path
    source: str
    positions: Positions

    @property
    def version(self) -> str:
        """Content hash of the validated playbook and the templates it uses."""
        return self._version

    _version: str = ""


@dataclass
class Project:
    """Everything in a playbooks folder, validated."""

    root: Path
    workspace: Workspace
    health: HealthModel | None
    playbooks: dict[str, LoadedPlaybook] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    workspace_source: str = ""
    health_source: str = ""

    @property
    def templates_dir(self) -> Path:
        """Where email templates live."""
        return self.root / "templates"

    def raise_for_problems(self) -> None:
        """Raise `ContractError` listing every problem, if any."""
        if self.problems:
            raise ContractError(self.problems)


# ---------------------------------------------------------------------------- entry points


def load_project(target: Path | str, *, only: Iterable[Path] | None = None) -> Project:
    """Load and validate a folder (or the folder of a file, checking only that file).

    Args:
        target: a playbooks folder, or one playbook file (its folder's `workspace.yaml` and
            `templates/` are used).
        only: restrict the playbooks checked to these files.
    """
    target = Path(target)
    root = target if target.is_dir() else target.parent
    files = sorted(only) if only else ([target] if target.is_file() else _playbook_files(root))
    problems: list[Problem] = []

    workspace, workspace_source, workspace_positions = _load_special(root / "workspace.yaml", Workspace, problems)
    health, health_source, health_positions = _load_special(root / "health.yaml", HealthModel, problems)
    ws = workspace if isinstance(workspace, Workspace) else Workspace()
    project = Project(root=root, workspace=ws, health=health if isinstance(health, HealthModel) else None)
    project.workspace_source, project.health_source = workspace_source, health_source
    if isinstance(workspace, Workspace):
        _check_workspace(workspace, root / "workspace.yaml", workspace_positions, problems)
    if isinstance(health, HealthModel):
        _check_health(health, root / "health.yaml", health_positions, problems)
    # One view of templates/ for this load: listed once and each file read once, however many
    # playbooks, steps and locales use it. Nothing outlives the call, so nothing goes stale.
    templates = Templates(project.templates_dir)

    loaded: list[LoadedPlaybook] = []
    for file in files:
        if file.name in SPECIAL_FILES:
            continue
        item = _load_playbook(file, problems)
        if item:
            loaded.append(item)

    all_ids = {lp.playbook.playbook for lp in loaded} | {
        _peek_id(f) for f in _playbook_files(root) if f not in files
    }
    # Draft values flow between playbooks through CRM fields: the taint is the folder's.
    taint = draft_safety.folder_taint((lp.playbook for lp in loaded), project.workspace.crm.fields)
    seen: dict[str, Path] = {}
    for lp in loaded:
        pid = lp.playbook.playbook
        if pid in seen:
            problems.append(Problem(_rel(lp.file), lp.positions.line_of(("playbook",)), "playbook", f"id `{pid}` is already used by {_rel(seen[pid])}"))
            continue
        seen[pid] = lp.file
        before = len(problems)
        _check_playbook(lp, project, templates, all_ids - {""}, problems)
        _check_drafts_reviewed(lp, templates, taint, problems)
        if len(problems) == before:
            lp._version = _version(lp.playbook, templates)
            project.playbooks[pid] = lp
    if isinstance(workspace, Workspace) and workspace.activities:
        _check_activities(project, root / "workspace.yaml", workspace_positions, problems, all_ids - {""})
    project.problems = sorted(set(problems))
    return project


def template_closure(playbook: Playbook, templates_dir: Path) -> dict[str, str]:
    """Every template file a playbook may use: its email parts and their layouts and partials."""
    return _closure(playbook, Templates(templates_dir))


def playbook_version(playbook: Playbook, templates_dir: Path) -> str:
    """A short content hash of a playbook and every template file it may use (layouts too)."""
    return _version(playbook, Templates(templates_dir))


def _closure(playbook: Playbook, templates: Templates) -> dict[str, str]:
    pending = sorted(
        path.name
        for name in {s.email.template for _, s in all_steps(playbook) if isinstance(s, EmailStep)}
        for part_files in templates.files(name).values()
        for path in part_files
    ) + sorted(_draft_files(playbook))
    files: dict[str, str] = {}
    while pending:
        file = pending.pop(0)
        if file in files or not (templates.folder / file).is_file():
            continue
        files[file] = templates.read(file)
        pending.extend(_REFERENCE.findall(files[file]))
    return dict(sorted(files.items()))


def _draft_files(playbook: Playbook) -> set[str]:
    """The prompt and fallback files of a playbook's `draft` steps."""
    names = {n for _, s in all_steps(playbook) if isinstance(s, DraftStep) for n in (s.draft.prompt, s.draft.fallback) if n}
    return {f"{name}.txt.j2" for name in names}


def _version(playbook: Playbook, templates: Templates) -> str:
    digest = hashlib.sha256(json.dumps(playbook.model_dump(mode="json"), sort_keys=True).encode())
    for name, source in _closure(playbook, templates).items():
        digest.update(name.encode() + b"\0" + source.encode())
    return digest.hexdigest()[:12]


_REFERENCE = re.compile(r"""{%-?\s*(?:extends|include|import|from)\s+["']([^"']+)["']""")


def _playbook_files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*.yaml") if p.name not in SPECIAL_FILES) + sorted(
        p for p in root.glob("*.yml") if p.name not in SPECIAL_FILES
    )


def _peek_id(file: Path) -> str:
    try:
        data, _, _ = load_yaml(file.read_text(encoding="utf-8"))
    except OSError:
        return ""
    return str(data.get("playbook", "")) if isinstance(data, dict) else ""


# ---------------------------------------------------------------------------- schema + positions


def _read(file: Path, problems: list[Problem]) -> tuple[Any, Positions, str] | None:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(_rel(file), 1, "", f"cannot read the file: {exc}"))
        return None
    data, positions, yaml_problems = load_yaml(text)
    for yp in yaml_problems:
        problems.append(Problem(_rel(file), yp.line, "", yp.message))
    if yaml_problems:
        return None
    return data, positions, text


def _load_special(file: Path, model: type[BaseModel], problems: list[Problem]) -> tuple[BaseModel | None, str, Positions]:
    if not file.exists():
        return None, "", Positions()
    read = _read(file, problems)
    if read is None:
        return None, "", Positions()
    data, positions, text = read
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(Problem(_rel(file), 1, "", f"expected a mapping of settings, found {type(data).__name__}"))
        return None, text, positions
    return validate_model(model, data, file, positions, problems), text, positions


def _load_playbook(file: Path, problems: list[Problem]) -> LoadedPlaybook | None:
    read = _read(file, problems)
    if read is None:
        return None
    data, positions, text = read
    if not isinstance(data, dict):
        problems.append(Problem(_rel(file), 1, "", "expected a playbook mapping with `playbook`, `trigger` and `steps`"))
        return None
    playbook = validate_model(Playbook, data, file, positions, problems)
    return LoadedPlaybook(playbook, file, text, positions) if playbook else None


# ---------------------------------------------------------------------------- semantic checks


class _Checker:
    def __init__(self, file: Path, positions: Positions, problems: list[Problem]) -> None:
        self.file, self.positions, self.problems = file, positions, problems

    def add(self, path: YPath, message: str, field_name: str | None = None) -> None:
        self.problems.append(Problem(_rel(self.file), self.positions.line_of(path), field_name or format_path(path), message))

    def expr(self, path: YPath, source: str | None, names: Mapping[str, ex.Shape]) -> None:
        if source is None:
            return
        for problem in ex.check_expression(source, names):
            self.add(path, problem.message)

    def text(self, path: YPath, source: str | None, names: Mapping[str, ex.Shape]) -> None:
        if source is None:
            return
        for problem in ex.check_text(source, names):
            self.add(path, problem.message)


@lru_cache(maxsize=1)
def _holiday_countries() -> tuple[str, ...]:
    # Imported here, not in the model: workflows decode Workspace often. The registry lists the
    # same codes as `list_supported_countries()`, which also imports every country's module to
    # list its subdivisions (~0.1 s).
    from touchpoint import cache

    name = cache.key("holiday-countries") if cache.folder() else ""
    stored = cache.read_json("holidays", name) if name else None
    if isinstance(stored, list):
        return tuple(str(code) for code in stored)
    try:
        from holidays.registry import EntityLoader

        codes = tuple(sorted(EntityLoader.get_country_codes(include_aliases=True)))
    except (ImportError, AttributeError):  # a holidays release without the registry
        import holidays as holidays_pkg

        codes = tuple(sorted(holidays_pkg.list_supported_countries()))
    if name:
        cache.write_json("holidays", name, list(codes))
    return codes


def _check_workspace(ws: Workspace, file: Path, positions: Positions, problems: list[Problem]) -> None:
    check = _Checker(file, positions, problems)
    known = _holiday_countries() if ws.holidays else ()
    for i, code in enumerate(ws.holidays):
        if code not in known:
            check.add(("holidays", i), f"unknown country code {code!r} for holidays (ISO 3166-1 alpha-2, e.g. US, DE, FR){hint(code, known)}")
    names = ex.scope(run=False, event=False)
    for name, rule in ws.segments.items():
        check.expr(("segments", name), rule, names)
    for i, metric in enumerate(ws.indicators):
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", metric):
            check.add(("indicators", i), f"expected the name of an `account.metrics` entry such as ai_weekly_users, found {metric!r}")
        elif metric in ws.indicators[:i]:
            check.add(("indicators", i), f"`{metric}` is listed twice")
    for name in ws.activities:
        if not re.match(r"^[a-z][a-z0-9_]*$", name):
            check.add(("activities", name), f"an activity name is lowercase letters, digits and `_` (e.g. ai_workshop), found {name!r}")


def _check_activities(project: Project, file: Path, positions: Positions, problems: list[Problem], known: set[str]) -> None:
    """Each `activities` step names a playbook of the folder and a step `id` it has."""
    check = _Checker(file, positions, problems)
    for name, activity in project.workspace.activities.items():
        if activity.step is None:
            continue
        playbook_id, step_id = activity.step.split(":", 1)
        if playbook_id not in known:
            check.add(("activities", name, "step"), f"no playbook `{playbook_id}` in this folder{hint(playbook_id, sorted(known))}")
            continue
        loaded = project.playbooks.get(playbook_id)
        ids = {step.id for _, step in all_steps(loaded.playbook) if step.id} if loaded else None
        if ids is not None and step_id not in ids:
            check.add(("activities", name, "step"), f"playbook `{playbook_id}` has no step with id `{step_id}`{hint(step_id, sorted(ids))}")


def _check_health(health: HealthModel, file: Path, positions: Positions, problems: list[Problem]) -> None:
    check = _Checker(file, positions, problems)
    names = ex.scope(run=False, event=False)
    seen: set[str] = set()
    for i, metric in enumerate(health.metrics):
        check.expr(("metrics", i, "value"), metric.value, names)
        if metric.id in seen:
            check.add(("metrics", i, "id"), f"metric id `{metric.id}` is used twice")
        seen.add(metric.id)
    if health.tiers.yellow > health.tiers.green:
        check.add(("tiers",), "`yellow` must not be above `green`")


def _check_playbook(lp: LoadedPlaybook, project: Project, templates: Templates, playbook_ids: set[str], problems: list[Problem]) -> None:
    pb, check = lp.playbook, _Checker(lp.file, lp.positions, problems)
    schedule = pb.trigger_kind == "schedule"
    names = ex.scope(schedule=schedule)
    roles = project.workspace.known_roles()

    trigger_names = ex.scope(run=False, schedule=schedule)
    check.expr(("trigger", "when"), getattr(pb.trigger, "when", None), trigger_names)
    if isinstance(pb.trigger, DateTrigger):
        check.expr(("trigger", "date"), pb.trigger.date, ex.scope(run=False, event=False))
    if pb.reenroll != "never" and pb.trigger_kind != "event":
        check.add(("reenroll",), f"`reenroll` applies to event triggers only; this playbook's trigger is `{pb.trigger_kind}`")
    check.expr(("exit_when",), pb.exit_when, names)
    check.expr(("goal",), pb.goal, names)
    for i, role in enumerate(pb.audience or []):
        if role not in roles:
            check.add(("audience", i), f"unknown role `{role}`{hint(role, roles)}; known roles: {', '.join(roles)} (add more under `roles:` in workspace.yaml)")

    if pb.scorecard:
        milestone_ids: set[str] = set()
        for i, milestone in enumerate(pb.scorecard.milestones):
            if milestone.id in milestone_ids:
                check.add(("scorecard", "milestones", i, "id"), f"milestone id `{milestone.id}` is used twice")
            milestone_ids.add(milestone.id)
            check.expr(("scorecard", "milestones", i, "when"), milestone.when, names)
        for i, checkpoint in enumerate(pb.scorecard.checkpoints):
            if checkpoint.day > pb.scorecard.target.by_day:
                check.add(("scorecard", "checkpoints", i, "day"), f"checkpoint day {checkpoint.day} is after the target's by_day {pb.scorecard.target.by_day}")

    if schedule:
        for key in ("scorecard", "exit_when", "goal", "audience", "holdout"):
            if getattr(pb, key):
                check.add((key,), f"`{key}` needs an account; a playbook with a `schedule` trigger runs once per tick over all accounts")
    step_ids: dict[str, YPath] = {}
    for path, step in all_steps(pb):
        kind = step_kind(step)
        if schedule and kind not in SCHEDULE_STEP_KINDS:
            check.add(path, f"a `{kind}` step needs an account; a playbook with a `schedule` trigger may use {', '.join(SCHEDULE_STEP_KINDS)}")
            continue
        if step.id:
            if step.id in step_ids:
                check.add(path + ("id",), f"step id `{step.id}` is already used at line {lp.positions.line_of(step_ids[step.id] + ('id',))}")
            else:
                step_ids[step.id] = path
        check.expr(path + ("when",), step.when, names)
        _check_step(step, path, pb, project, templates, playbook_ids, roles, names, check)


def _check_step(
    step: StepBase,
    path: YPath,
    pb: Playbook,
    project: Project,
    templates: Templates,
    playbook_ids: set[str],
    roles: tuple[str, ...],
    names: Mapping[str, ex.Shape],
    check: _Checker,
) -> None:
    schedule = pb.trigger_kind == "schedule"
    if isinstance(step, EmailStep):
        mail = step.email
        base = path + ("email",)
        for i, target in enumerate(mail.to or []):
            if is_address(target):
                continue
            if schedule and (target in roles or target in INTERNAL_RECIPIENTS):
                check.add(base + ("to", i), f"`{target}` is a role of one account's contacts; a schedule playbook sends to `for_each: csm` or to addresses")
                continue
            if target in roles or target in INTERNAL_RECIPIENTS:
                continue
            problems = ex.check_expression(target, names)
            if problems:
                check.add(base + ("to", i), f"`{target}` is neither a known role ({', '.join(roles + INTERNAL_RECIPIENTS)}) nor a valid expression giving addresses{hint(target, roles + INTERNAL_RECIPIENTS)}: {problems[0].message}")
        if mail.for_each and not schedule:
            check.add(base + ("for_each",), "`for_each: csm` is for playbooks with a `schedule` trigger")
        if schedule and not mail.for_each and not mail.to:
            check.add(base, "an email in a schedule playbook needs `for_each: csm` or `to:` addresses (there is no single account)")
        if schedule and mail.approval is not None:
            check.add(base + ("approval",), "`approval` needs an account's run to hold the email; a schedule playbook sends once per tick (approve the digest's content in its templates instead)")
        check.expr(base + ("locale",), mail.locale, names)
        _check_email_template(mail.template, base + ("template",), templates, schedule, check)
    elif isinstance(step, WaitUntilStep):
        check.expr(path + ("wait_until", "date"), step.wait_until.date, names)
        if step.wait_until.day is not None and step.wait_until.offset.total_seconds():
            check.add(path + ("wait_until", "offset"), "`offset` goes with `date`, not with `day`")
    elif isinstance(step, WaitForStep):
        check.expr(path + ("wait_for", "when"), step.wait_for.when, names)
    elif isinstance(step, TaskStep):
        task = step.task
        check.text(path + ("task", "title"), task.title, names)
        check.text(path + ("task", "notes"), task.notes, names)
        if task.owner not in ("csm", "owner") and "@" not in task.owner and "{" not in task.owner:
            check.add(path + ("task", "owner"), f"expected `csm`, `owner` or an email address, found {task.owner!r}")
    elif isinstance(step, UpdateStep):
        mapping = project.workspace.crm.fields
        for key, value in step.update.fields.items():
            where = path + ("update", "fields", key)
            if mapping and key not in mapping:
                check.add(where, f"field `{key}` has no CRM property in workspace.yaml `crm.fields`{hint(key, mapping)}; mapped fields: {', '.join(mapping)}")
            if isinstance(value, str):
                check.text(where, value, names)
            elif isinstance(value, dict):
                if set(value) != {"expr"} or not isinstance(value.get("expr"), str):
                    check.add(where, "a field value is a text, a number, a boolean, or `{expr: <expression>}`")
                else:
                    check.expr(where, value["expr"], names)
    elif isinstance(step, NoteStep):
        check.text(path + ("note", "text"), step.note.text, names)
    elif isinstance(step, WebhookStep):
        hook = step.webhook
        check.text(path + ("webhook", "url"), hook.url, names)
        for key, value in hook.headers.items():
            check.text(path + ("webhook", "headers", key), value, names)
        for sub, value in _strings(hook.json_, path + ("webhook", "json")):
            check.text(sub, value, names)
    elif isinstance(step, SetStep):
        for key, value in step.set.items():
            check.expr(path + ("set", key), value, names)
    elif isinstance(step, DraftStep):
        for key in ("prompt", "fallback"):
            name = getattr(step.draft, key)
            if name is not None:
                _check_draft_template(name, path + ("draft", key), templates, check)
    elif isinstance(step, IfStep):
        check.expr(path + ("if",), step.if_, names)
    elif isinstance(step, RepeatStep):
        check.expr(path + ("repeat", "until"), step.repeat.until, names)
    elif isinstance(step, StartStep):
        check.expr(path + ("start", "when"), step.start.when, names)
        if step.start.playbook not in playbook_ids:
            check.add(path + ("start", "playbook"), f"no playbook `{step.start.playbook}` in {_rel(project.root)}{hint(step.start.playbook, playbook_ids)}; playbooks: {', '.join(sorted(playbook_ids))}")
        if step.start.playbook == pb.playbook:
            check.add(path + ("start", "playbook"), "a playbook cannot start itself (one run per account at a time)")


def _strings(value: Any, path: YPath) -> Iterator[tuple[YPath, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, path + (index,))


# ---------------------------------------------------------------------------- email templates


def _check_email_template(name: str, path: YPath, templates: Templates, schedule: bool, check: _Checker) -> None:
    tdir = templates.folder
    files = templates.files(name)
    for part in ("subject", "html"):
        if not files[part] or files[part][0].name != f"{name}.{part}.j2":
            subjects = [entry for entry in templates.listing(tdir) if entry.endswith(".subject.j2")]
            available = sorted({entry.split(".")[0] for entry in subjects}) if tdir.exists() else []
            check.add(path, f"template `{name}` has no {tdir.name}/{name}.{part}.j2{hint(name, available)}" + (f"; templates: {', '.join(available)}" if available else f"; no templates in {_rel(tdir)}"))
            return
    seen: set[str] = set()
    for part_files in files.values():
        for file in part_files:
            _check_template_file(file.name, templates, schedule, check, path, seen)


def _check_template_file(
    name: str, templates: Templates, schedule: bool, check: _Checker, step_path: YPath, seen: set[str], chain: tuple[str, ...] = (), *, email: bool = True
) -> None:
    if name in seen:
        return
    step_where = f"{_rel(check.file)}:{check.positions.line_of(step_path)}"
    result = templates.check(name, schedule=schedule, email=email)
    where = _rel(templates.folder / name)
    for line, message in result.problems:
        check.problems.append(Problem(where, line, "", f"{message} (used by the step at {step_where})"))
    seen.add(name)
    for target, line in result.references:
        if target in chain or target == name:
            loop = " -> ".join((*chain[chain.index(target):], name, target) if target in chain else (name, target))
            check.problems.append(
                Problem(_rel(templates.folder / name), line, "", f"the templates include or extend each other without end ({loop}) (used by the step at {step_where})")
            )
        elif target not in seen:
            _check_template_file(target, templates, schedule, check, step_path, seen, (*chain, name), email=email)


def _check_draft_template(name: str, path: YPath, templates: Templates, check: _Checker) -> None:
    """A `draft` step's prompt or fallback: `templates/<name>.txt.j2`, checked without `contact`."""
    file = f"{name}.txt.j2"
    if not (templates.folder / file).is_file():
        texts = sorted(entry.removesuffix(".txt.j2") for entry in templates.listing(templates.folder) if entry.endswith(".txt.j2"))
        check.add(path, f"no {templates.folder.name}/{file} for `{name}`{hint(name, texts)}; a draft's prompt and fallback are text templates named without `.txt.j2`" + (f"; text templates: {', '.join(texts)}" if texts else ""))
        return
    _check_template_file(file, templates, False, check, path[:-2], set(), email=False)


def _check_drafts_reviewed(lp: LoadedPlaybook, templates: Templates, taint: draft_safety.Taint, problems: list[Problem]) -> None:
    """The safety rule of section 12: an email that can read a draft value needs `approval`."""
    check = _Checker(lp.file, lp.positions, problems)
    schedule = lp.playbook.trigger_kind == "schedule"
    for unsafe in draft_safety.unsafe_emails(lp.playbook, taint, templates):
        check.add(unsafe.path + ("email",), draft_safety.refusal_message(unsafe, schedule))


def summary(lp: LoadedPlaybook) -> str:
    """One line about a valid playbook, for `touchpoint validate`."""
    pb = lp.playbook
    trigger = pb.trigger
    what = {
        "event": "on " + " or ".join(trigger.events) if isinstance(trigger, EventTrigger) else "",
        "date": f"on {getattr(trigger, 'date', '')} {format_duration(getattr(trigger, 'offset', timedelta(0)))}",
        "schedule": f"on schedule '{getattr(trigger, 'schedule', '')}'",
        "manual": "started manually",
    }[pb.trigger_kind]
    templates = {s.email.template for _, s in all_steps(pb) if isinstance(s, EmailStep)}
    card = f", report card {pb.scorecard.target.score:g} by day {pb.scorecard.target.by_day}" if pb.scorecard else ""
    return f"{pb.playbook} ({_rel(lp.file)}): {count_steps(pb)} steps, {what}, {len(templates)} email templates{card}"
