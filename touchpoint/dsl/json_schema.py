"""JSON Schemas of the YAML files, for editors: completion, hover text and inline errors.

Generated from the pydantic models of `touchpoint.dsl.schema`, so a key added to a model is in
the schema at once. The models accept some short forms through "before" validators (a condition
written as `true`, `to: champion` for `to: [champion]`, `trigger: manual`, `exit: converted`,
durations like `3d`); pydantic's own schema would only show the long form, so `EditorSchema`
describes what the validators accept. The schema is a help for editors, not the contract's
judge: `touchpoint validate` also checks expressions, templates, ids and references.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from touchpoint.dsl.accounts import AccountDoc
from touchpoint.dsl.schema import Playbook
from touchpoint.dsl.workspace import HealthModel, Workspace

Kind = Literal["playbook", "workspace", "health", "account"]
KINDS: dict[str, tuple[type[BaseModel], str, str]] = {
    "playbook": (Playbook, "Touchpoint playbook", "One playbook file: playbooks/<name>.yaml."),
    "workspace": (Workspace, "Touchpoint workspace.yaml", "Settings shared by every playbook of a folder."),
    "health": (HealthModel, "Touchpoint health.yaml", "The daily health score model."),
    "account": (AccountDoc, "Touchpoint account document", "A sample account (playbooks/samples/<name>.yaml) or an upsert."),
}
"""What `touchpoint schema KIND` prints: the model, the schema's title and description."""

_SHORT_DURATION = r"^\s*\d+\s*[mhdw]\s*$"
_ISO_DURATION = r"^P(\d+W)?(\d+D)?(T(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$"
_DURATION: JsonSchemaValue = {
    "anyOf": [
        {"type": "string", "pattern": _SHORT_DURATION},
        {"type": "string", "pattern": _ISO_DURATION},
    ],
    "description": "A duration: 90m, 12h, 3d, 2w, or ISO 8601 (P3D).",
}
_SIGNED_DURATION: JsonSchemaValue = {
    "anyOf": [
        {"type": "string", "pattern": r"^\s*-?\d+\s*[mhdw]\s*$"},
        {"type": "string", "pattern": "^-?" + _ISO_DURATION[1:]},
    ],
    "description": "A duration, negative for 'before': -120d, 12h, P3D.",
}
_OUTCOMES = ["completed", "converted", "exited", "cancelled", "failed"]

DESCRIPTIONS: dict[str, dict[str, str]] = {
    "Playbook": {
        "playbook": "The playbook's id: lowercase letters, digits and '-', unique in the folder.",
        "name": "A human name, shown in the console and reports.",
        "description": "What the playbook is for.",
        "trigger": "Who enters and when: exactly one of event, date, schedule or manual.",
        "reenroll": "Event triggers: never (default), always, or 'after 90d'.",
        "exit_when": "An expression: when true, the run ends with outcome 'exited'.",
        "goal": "An expression: when true, the run ends with outcome 'converted'.",
        "audience": "Default recipients of email steps, by contact role.",
        "send_window": "Days and hours emails may go out (overrides workspace.yaml).",
        "scorecard": "The onboarding report card: milestones, target, checkpoints, on_miss.",
        "steps": "What the run does, in order. Each step has exactly one action key.",
    },
    "StepBase": {
        "id": "A name for the step, unique in the playbook: status, timelines and tasks use it.",
        "when": "An expression: the step is skipped unless it is true.",
        "on_error": "continue (default): a failed step is recorded and the run goes on; stop: the run fails.",
    },
    "EmailAction": {
        "template": "The template name: templates/<name>.subject.j2 and <name>.html.j2.",
        "to": "Recipients: contact roles, csm, owner, addresses or expressions (default: audience).",
        "cc_csm": "Copy the account's CSM.",
        "locale": "An expression choosing the template variant, instead of each contact's locale.",
        "for_each": "Schedule playbooks: one email per CSM over their own book.",
        "approval": "A person approves (optionally editing subject and HTML) or rejects the rendered emails before they go out.",
    },
    "Approval": {
        "by": "Who approves: csm (default), owner, or an email address (the workspace's crm.fallback_owner when the account has no such person).",
        "timeout": "How long the request waits for a decision, from the request (default 2d).",
        "on_timeout": "Without a decision by the timeout: skip (default, nothing is sent) or send the emails as rendered.",
    },
    "WaitForAction": {
        "event": "The event type (or a list of types) to wait for.",
        "when": "An expression about `event`: only a matching event ends the wait.",
        "timeout": "How long to wait, from the step's start.",
        "seen": "Also count a matching event that arrived earlier in this run.",
        "on_timeout": "Steps to run when the timeout passes first; the run then goes on.",
    },
    "TaskAction": {
        "title": "The task's title (a template).",
        "owner": "csm (default), owner, or an email address.",
        "due": "Due this long after the task is created.",
        "await": "Wait for task.completed for this task before going on.",
        "on_overdue": "With await and due: steps to run when the task is overdue.",
    },
}
"""Hover texts by model name and key (a model's own docstring describes the model)."""


class EditorSchema(GenerateJsonSchema):
    """Pydantic's JSON Schema generator, taught the short forms our validators accept."""

    def function_before_schema(self, schema: core_schema.BeforeValidatorFunctionSchema) -> JsonSchemaValue:
        inner = self.generate_inner(schema["schema"])
        function = schema["function"]["function"]
        name = getattr(function, "__qualname__", "").rsplit(".", 1)[-1]
        module = getattr(function, "__module__", "")
        if name == "_expr":  # a condition may be a YAML boolean or number
            return {"anyOf": [inner, {"type": "boolean"}, {"type": "number"}], "description": "An expression (Jinja2, no {{ }})."}
        if name == "parse_duration":
            return dict(_SIGNED_DURATION)
        if module == "touchpoint.dsl.durations":  # the positive duration's check
            return dict(_DURATION)
        if name == "_trigger":
            return {"anyOf": [{"const": "manual"}, inner]}
        if name == "_exit":
            return {"anyOf": [{"type": "null"}, {"enum": _OUTCOMES}, inner]}
        if name == "_reenroll":
            return {"type": "string", "pattern": r"^(never|always|after\s*\S+)$", "description": "never, always, or 'after 90d'."}
        if name == "_upper":
            enum = list(inner.get("enum", []))
            return {**inner, "enum": enum + [value.lower() for value in enum]}
        return _with_single_item(inner)

    def dict_schema(self, schema: core_schema.DictSchema) -> JsonSchemaValue:
        value = super().dict_schema(schema)
        if "patternProperties" in value and "additionalProperties" not in value:
            value["additionalProperties"] = False  # a key must match the pattern, as the model says
        return value

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        value = super().model_schema(schema)
        cls = schema["cls"]
        texts: dict[str, str] = {}
        for base in reversed(cls.__mro__):
            texts.update(DESCRIPTIONS.get(base.__name__, {}))
        properties = value.get("properties", {})
        for key, prop in properties.items():
            prop.pop("title", None)
            if key in texts:
                prop["description"] = texts[key]
        if cls.__name__ == "ExitStep":
            value["required"] = ["exit"]
        return value


def _with_single_item(inner: JsonSchemaValue) -> JsonSchemaValue:
    """`x: [a]` may be written `x: a`: a list (or nullable list) also accepts one item."""
    options = inner.get("anyOf", [inner])
    arrays = [option for option in options if option.get("type") == "array" and "items" in option]
    if not arrays:
        return inner
    return {"anyOf": [*options, *(array["items"] for array in arrays)], **({"default": inner["default"]} if "default" in inner else {})}


def json_schema(kind: str = "playbook") -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one kind of YAML file.

    Raises:
        ValueError: for an unknown kind, listing the known ones.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown schema {kind!r}: choose one of {', '.join(KINDS)}")
    model, title, description = KINDS[kind]
    body = model.model_json_schema(schema_generator=EditorSchema, mode="validation")
    body.pop("title", None)
    body.pop("description", None)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title, "description": description, **body}
