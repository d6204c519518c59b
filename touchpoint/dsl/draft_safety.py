"""The safety rule of AI drafts (contract section 12): no draft reaches a customer unreviewed.

A **draft value** is the text of a `draft` step (`run.vars.<into>`), anything a `set` computes
from one, any dynamic read of `run.vars` in a playbook that holds one (`run.vars[key]`, a loop
over it, `run.vars | tojson`, `run` as a whole), and an account field an `update` writes from one
(`account.properties.<field>`, under the CRM's property name too, for every playbook of the
folder: the CRM sync brings it back). `validate` refuses, at the email step's line, an email
step without `approval` whose templates (every part, locale variant, layout and include), `to:`
or `locale` can read one.

The analysis is flow-insensitive and errs on the side of refusing: a value that is a draft value
anywhere in a playbook is one everywhere in it, and what cannot be followed (a computed key, an
include whose name is computed) counts as reading every draft value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from jinja2 import TemplateSyntaxError, nodes

from touchpoint.dsl import expressions as ex
from touchpoint.dsl.sandbox import expression_environment
from touchpoint.dsl.schema import (
    DraftStep,
    EmailStep,
    Playbook,
    SetStep,
    UpdateStep,
    is_address,
)
from touchpoint.dsl.templates import Templates, template_environment
from touchpoint.dsl.walk import all_steps, step_name
from touchpoint.dsl.yamlpos import Path as YPath

ACCOUNT_FIELDS = ("name", "segment", "region", "country", "timezone", "locale", "plan", "arr", "created_at", "renewal_date")
"""Top-level account fields an `update` of the same name may overwrite through a CRM sync."""


@dataclass
class Reads:
    """What a template or expression can read, each with the line of its first read."""

    vars: dict[str, int] = field(default_factory=dict)
    dynamic_vars: int | None = None
    properties: dict[str, int] = field(default_factory=dict)
    dynamic_properties: int | None = None
    fields: dict[str, int] = field(default_factory=dict)
    whole_account: int | None = None

    def merge(self, other: Reads) -> None:
        for mine, theirs in ((self.vars, other.vars), (self.properties, other.properties), (self.fields, other.fields)):
            for key, line in theirs.items():
                mine.setdefault(key, line)
        self.dynamic_vars = self.dynamic_vars if self.dynamic_vars is not None else other.dynamic_vars
        self.dynamic_properties = self.dynamic_properties if self.dynamic_properties is not None else other.dynamic_properties
        self.whole_account = self.whole_account if self.whole_account is not None else other.whole_account


@dataclass
class Taint:
    """The draft values of a folder: `run.vars` names per playbook, account fields for all."""

    vars: dict[str, set[str]] = field(default_factory=dict)
    properties: set[str] = field(default_factory=set)
    fields: set[str] = field(default_factory=set)

    def draft_read(self, playbook: str, reads: Reads) -> tuple[str, int] | None:
        """The first draft value ``reads`` can see in ``playbook``, as (what, line), else None."""
        names = self.vars.get(playbook, set())
        found: list[tuple[int, str]] = []
        if names and reads.dynamic_vars is not None:
            found.append((reads.dynamic_vars, f"`run.vars` read dynamically (it holds the draft value{'s' if len(names) > 1 else ''} {', '.join(sorted(names))})"))
        found += [(line, f"`run.vars.{name}`") for name, line in reads.vars.items() if name in names]
        if self.properties:
            for line in (reads.dynamic_properties, reads.whole_account):
                if line is not None:
                    found.append((line, f"`account.properties` read dynamically (an `update` writes a draft value into {', '.join(sorted(self.properties))})"))
        found += [(line, f"`account.properties.{name}` (an `update` writes a draft value into it)") for name, line in reads.properties.items() if name in self.properties]
        found += [(line, f"`account.{name}` (an `update` writes a draft value into it)") for name, line in reads.fields.items() if name in self.fields]
        if not found:
            return None
        line, what = min(found)
        return what, line


# ---------------------------------------------------------------------------- reading an AST


def reads_of(tree: nodes.Node) -> Reads:
    """What ``tree`` (a parsed template or expression) can read of `run.vars` and the account."""
    parents: dict[int, nodes.Node] = {}
    stack = [tree]
    while stack:
        node = stack.pop()
        for child in node.iter_child_nodes():
            parents[id(child)] = node
            stack.append(child)
    found = Reads()
    for node in tree.find_all(nodes.Name):
        if node.ctx != "load":
            continue
        if node.name == "run":
            _run_read(node, parents, found)
        elif node.name == "account":
            key = _key(parents.get(id(node)), node)
            if key is None:
                found.whole_account = _first(found.whole_account, node.lineno)
            else:
                found.fields.setdefault(key, node.lineno)
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if _accessed(node) == "properties":
            _member_read(node, parents, found.properties, lambda line: setattr(found, "dynamic_properties", _first(found.dynamic_properties, line)))
    for ref in tree.find_all((nodes.Include, nodes.Extends, nodes.Import, nodes.FromImport)):
        if not isinstance(getattr(ref, "template", None), nodes.Const):  # a computed name: it may be any file
            found.dynamic_vars = _first(found.dynamic_vars, ref.lineno)
            found.dynamic_properties = _first(found.dynamic_properties, ref.lineno)
    return found


def _run_read(node: nodes.Name, parents: Mapping[int, nodes.Node], found: Reads) -> None:
    parent = parents.get(id(node))
    key = _key(parent, node)
    if key is None:  # `run` as a whole: it carries `vars`
        found.dynamic_vars = _first(found.dynamic_vars, node.lineno)
    elif key == "vars" and parent is not None:
        _member_read(parent, parents, found.vars, lambda line: setattr(found, "dynamic_vars", _first(found.dynamic_vars, line)))


def _member_read(holder: nodes.Node, parents: Mapping[int, nodes.Node], names: dict[str, int], dynamic: Callable[[int], None]) -> None:
    """A read of one member of a free-form map (``holder`` is the map): a name, or dynamic."""
    access = parents.get(id(holder))
    key = _key(access, holder)
    if key is None or access is None:
        dynamic(holder.lineno)
        return
    call = parents.get(id(access))
    if isinstance(call, nodes.Call) and call.node is access:  # a method of the map: `.get('x')`, `.items()`
        first = call.args[0] if call.args else None
        if key == "get" and isinstance(first, nodes.Const) and isinstance(first.value, str):
            names.setdefault(first.value, access.lineno)
        else:
            dynamic(access.lineno)
        return
    names.setdefault(key, access.lineno)


def _key(access: nodes.Node | None, subject: nodes.Node) -> str | None:
    """The constant member ``access`` reads of ``subject`` (None: not a constant member read of it)."""
    if isinstance(access, (nodes.Getattr, nodes.Getitem)) and access.node is subject:
        return _accessed(access)
    return None


def _accessed(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Getattr):
        return str(node.attr)
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
        return node.arg.value
    return None


def _first(current: int | None, line: int) -> int:
    return line if current is None else min(current, line)


def expression_reads(source: str, *, text: bool = False) -> Reads:
    """`reads_of` an expression (``text``: an inline template); a source that does not parse reads nothing
    (validation reports it)."""
    try:
        tree = expression_environment().parse(source) if text else ex.parse_expression(source)
    except Exception:  # a syntax error: reported by the name checks
        return Reads()
    return reads_of(tree)


# ---------------------------------------------------------------------------- the folder's taint


def folder_taint(playbooks: Iterable[Playbook], crm_fields: Mapping[str, str]) -> Taint:
    """Every draft value of a folder: each playbook's `draft` targets and what `set` and `update`
    compute from them, until nothing changes (a value may flow through several playbooks)."""
    books = list(playbooks)
    taint = Taint(vars={pb.playbook: {s.draft.into for _, s in all_steps(pb) if isinstance(s, DraftStep)} for pb in books})
    changed = True
    while changed:
        changed = False
        for pb in books:
            mine = taint.vars[pb.playbook]
            for _, step in all_steps(pb):
                if isinstance(step, SetStep):
                    for key, source in step.set.items():
                        if key not in mine and taint.draft_read(pb.playbook, expression_reads(source)):
                            mine.add(key)
                            changed = True
                elif isinstance(step, UpdateStep):
                    for name, value in step.update.fields.items():
                        if name in taint.properties or not taint.draft_read(pb.playbook, _field_reads(value)):
                            continue
                        taint.properties.update({name, crm_fields.get(name, name)})
                        if name in ACCOUNT_FIELDS:
                            taint.fields.add(name)
                        changed = True
    return taint


def _field_reads(value: object) -> Reads:
    if isinstance(value, str):
        return expression_reads(value, text=True)
    if isinstance(value, dict) and isinstance(value.get("expr"), str):
        return expression_reads(str(value["expr"]))
    return Reads()


# ---------------------------------------------------------------------------- the rule


@dataclass(frozen=True)
class Unsafe:
    """An email step without `approval` that can read a draft value."""

    path: YPath
    step_name: str
    what: str
    where: str
    """``templates/x.html.j2:5``, or the step's key (`to`, `locale`)."""


def unsafe_emails(playbook: Playbook, taint: Taint, templates: Templates) -> Iterator[Unsafe]:
    """Each email step of ``playbook`` without `approval` that can read a draft value."""
    if not taint.vars.get(playbook.playbook) and not taint.properties and not taint.fields:
        return
    cache: dict[str, Reads | None] = {}
    for path, step in all_steps(playbook):
        if not isinstance(step, EmailStep) or step.email.approval is not None:
            continue
        mail = step.email
        name = step_name(step, path)
        sources = [("to", target) for target in mail.to or [] if not is_address(target)]
        sources += [("locale", mail.locale)] if mail.locale else []
        hit: tuple[str, str] | None = None
        for key, source in sources:
            found = taint.draft_read(playbook.playbook, expression_reads(source))
            if found:
                hit = (found[0], f"its `{key}`")
                break
        if hit is None:
            for file in _closure(mail.template, templates):
                if file not in cache:
                    cache[file] = _file_reads(file, templates)
                reads = cache[file]
                if reads is None:
                    continue
                found = taint.draft_read(playbook.playbook, reads)
                if found:
                    hit = (found[0], f"{templates.folder.name}/{file}:{found[1]}")
                    break
        if hit is not None:
            yield Unsafe(path, name, hit[0], hit[1])


def _file_reads(file: str, templates: Templates) -> Reads | None:
    try:
        source = templates.read(file)
        tree = template_environment(templates.folder).parse(source, name=file)
    except (OSError, TemplateSyntaxError):
        return None  # validation reports a missing or broken file
    return reads_of(tree)


def _closure(template: str, templates: Templates) -> list[str]:
    """Every file an email template's parts can render: each part and locale variant, and what
    they extend, include or import (as far as the names are written out)."""
    pending = [p.relative_to(templates.folder).as_posix() for files in templates.files(template).values() for p in files]
    seen: list[str] = []
    while pending:
        file = pending.pop(0)
        if file in seen or not (templates.folder / file).is_file():
            continue
        seen.append(file)
        try:
            tree = template_environment(templates.folder).parse(templates.read(file), name=file)
        except (OSError, TemplateSyntaxError):
            continue
        for node in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
            target = getattr(node, "template", None)
            if isinstance(target, nodes.Const) and isinstance(target.value, str):
                pending.append(target.value)
    return seen


def refusal_message(unsafe: Unsafe, schedule: bool) -> str:
    """What `validate` says at the email step."""
    head = f"email step `{unsafe.step_name}` can send a draft value unreviewed: {unsafe.what}, read by {unsafe.where}"
    if schedule:
        return f"{head}; a schedule playbook cannot hold an email for approval: keep AI drafts out of the fields its emails read"
    return f"{head}; an AI draft reaches a customer only after a person approves it: add `approval: {{by: csm}}` to this email step"

