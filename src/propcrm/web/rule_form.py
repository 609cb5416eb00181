"""The form-based rule editor's fields, generated from the rule pack schema (:func:`domain.rulepack.json_schema`,
the same structs ``docs/rulepack.schema.json`` is written from), so a new rule kind or field appears in the
form without a template change.

A rule kind's fields come from its ``$defs`` entry; each becomes one form control by the shape of its schema:
a choice (``enum``) is a select, a decimal or a whole number a text box, a list of choices a set of
checkboxes, a list of decimals comma-separated text, an object of alternative amounts (``Amount``: exactly one
of ``pct_initial``/``pct_base``/``absolute``) a select of the unit beside the value, and anything else (a
lock level, a weekday and time) a one-line YAML value. The form never validates on its own: :func:`apply_form`
writes the fields back into the pack's YAML, which then goes through the same parsing and validation as the
YAML editor (``services.rulepacks.read_pack``) — so both round-trip through one set of rules.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..domain.rulepack import json_schema
from ..services.errors import Invalid

MAX_RULES_PER_PHASE = 60


@dataclass(frozen=True)
class FieldSpec:
    name: str
    control: str  # enum | decimal | int | text | bool | choice | multi | list | yaml
    required: bool
    options: tuple[str, ...] = ()
    default: Any = None
    description: str = ""


@dataclass
class RuleForm:
    kind: str
    description: str
    fields: list[tuple[FieldSpec, Any]] = field(default_factory=list)  # (spec, current value for the control)


@functools.cache
def _schema() -> dict[str, Any]:
    return json_schema()


def _defs() -> dict[str, Any]:
    return _schema()["$defs"]


@functools.cache
def kinds() -> dict[str, str]:
    """Rule kind → its ``$defs`` name, from the phase's rule list discriminator."""
    mapping = _defs()["Phase"]["properties"]["rules"]["items"]["discriminator"]["mapping"]
    return {kind: ref.rsplit("/", 1)[-1] for kind, ref in sorted(mapping.items())}


def _is_decimal(schema: dict[str, Any]) -> bool:
    alternatives = schema.get("anyOf") or []
    return any(a.get("type") == "string" and "pattern" in a for a in alternatives) and any(
        a.get("type") == "number" for a in alternatives)


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return _defs()[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _spec(name: str, schema: dict[str, Any], required: bool) -> FieldSpec:
    description = schema.get("description", "")
    default = schema.get("default")
    inner = schema
    alternatives = schema.get("anyOf")
    if alternatives and not _is_decimal(schema):
        non_null = [a for a in alternatives if a.get("type") != "null"]
        if len(non_null) < len(alternatives):
            required = False
        if len(non_null) == 1:
            inner = non_null[0]
        else:
            return FieldSpec(name, "yaml", required, default=default, description=description)
    if _is_decimal(inner):
        return FieldSpec(name, "decimal", required, default=default, description=description or inner.get("description", ""))
    if "enum" in inner:
        return FieldSpec(name, "enum", required, options=tuple(inner["enum"]), default=default, description=description)
    if "$ref" in inner:
        target = _resolve(inner)
        props = target.get("properties", {})
        if props and not target.get("required") and all(_is_decimal(p.get("anyOf", [{}])[0]) or _is_decimal(p)
                                                        for p in props.values()):
            return FieldSpec(name, "choice", required, options=tuple(sorted(props)), default=default,
                             description=target.get("description", ""))
        return FieldSpec(name, "yaml", required, default=default, description=target.get("description", description))
    kind = inner.get("type")
    if kind == "integer":
        return FieldSpec(name, "int", required, default=default, description=description)
    if kind == "string":
        return FieldSpec(name, "text", required, default=default, description=description)
    if kind == "boolean":
        return FieldSpec(name, "bool", required, default=default, description=description)
    if kind == "array":
        items = _resolve(inner.get("items", {}))
        if "enum" in items:
            return FieldSpec(name, "multi", required, options=tuple(items["enum"]), default=default,
                             description=description)
        if _is_decimal(items) or items.get("type") in ("integer", "string"):
            return FieldSpec(name, "list", required, default=default, description=description)
    return FieldSpec(name, "yaml", required, default=default, description=description)


@functools.cache
def specs(kind: str) -> tuple[FieldSpec, ...]:
    """The form fields of a rule kind: required ones first, then the rest, each in the schema's order."""
    definition = _defs()[kinds()[kind]]
    required = set(definition.get("required", []))
    out = [_spec(name, schema, name in required) for name, schema in definition["properties"].items()
           if name != "kind"]
    return tuple(sorted(out, key=lambda s: (not s.required, s.name == "id")))


def _control_value(spec: FieldSpec, value: Any) -> Any:
    """A rule's value as its control shows it."""
    if value is None:
        return "" if spec.control not in ("multi", "choice") else ([] if spec.control == "multi" else ("", ""))
    if spec.control == "choice":
        if isinstance(value, dict) and len(value) == 1:
            (unit, amount), = value.items()
            return unit, _text(amount)
        return "", ""
    if spec.control == "multi":
        return [str(v) for v in value] if isinstance(value, list) else []
    if spec.control == "list":
        return ", ".join(_text(v) for v in value) if isinstance(value, list) else _text(value)
    if spec.control == "bool":
        return "true" if value else "false"
    if spec.control == "yaml":
        return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()
    return _text(value)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def rule_forms(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Per phase: its name and its rules as forms (kind, description, fields with values)."""
    phases = []
    for phase in doc.get("phases") or []:
        rules = []
        for rule in phase.get("rules") or []:
            kind = rule.get("kind")
            if kind not in kinds():
                raise Invalid(f"rules: unknown kind {kind!r}; edit it in the YAML editor")
            definition = _defs()[kinds()[kind]]
            rules.append(RuleForm(kind=kind, description=definition.get("description", ""),
                                  fields=[(spec, _control_value(spec, rule.get(spec.name))) for spec in specs(kind)]))
        phases.append({"name": phase.get("name", ""), "rules": rules})
    return phases


def _read(spec: FieldSpec, form: Any, prefix: str) -> tuple[bool, Any]:
    """(present, value) of one field from the posted form; absent fields take the pack's default."""
    key = f"{prefix}.{spec.name}"
    if spec.control == "multi":
        chosen = [v for v in form.getlist(key) if v in spec.options]
        return (bool(chosen) or spec.required), chosen
    if spec.control == "choice":
        unit, amount = (form.get(f"{key}.unit") or "").strip(), (form.get(f"{key}.value") or "").strip()
        if not amount:
            return False, None
        if unit not in spec.options:
            raise Invalid(f"{key}: choose one of {', '.join(spec.options)}")
        return True, {unit: amount}
    text = (form.get(key) or "").strip()
    if not text:
        return False, None
    if spec.control == "enum":
        return True, text  # an unknown choice is refused by the pack's own validation, naming the field
    if spec.control == "int":
        return True, int(text) if re.fullmatch(r"[+-]?\d{1,12}", text) else text
    if spec.control == "bool":
        return True, text == "true"
    if spec.control == "list":
        return True, [part.strip() for part in text.split(",") if part.strip()]
    if spec.control == "yaml":
        try:
            return True, yaml.safe_load(text)
        except yaml.YAMLError:
            raise Invalid(f"{key}: not a YAML value: {text[:80]!r}") from None
    return True, text


def apply_form(doc: dict[str, Any], form: Any) -> dict[str, Any]:
    """The pack ``doc`` with its rules rebuilt from the posted form: each rule's fields (``r.<phase>.<rule>.<field>``),
    rules ticked for removal dropped, a rule of the kind chosen in ``add.<phase>`` appended (empty: to fill in)."""
    for i, phase in enumerate(doc.get("phases") or []):
        rebuilt = []
        for j, rule in enumerate(phase.get("rules") or []):
            prefix = f"r.{i}.{j}"
            if form.get(f"{prefix}.remove") == "yes":
                continue
            kind = rule.get("kind")
            new = {"kind": kind}
            for spec in specs(kind):
                present, value = _read(spec, form, prefix)
                if present:
                    new[spec.name] = value
            rebuilt.append(new)
        added = form.get(f"add.{i}") or ""
        if added:
            if added not in kinds():
                raise Invalid(f"add.{i}: no rule kind {added[:40]!r}")
            rebuilt.append({"kind": added})
        if len(rebuilt) > MAX_RULES_PER_PHASE:
            raise Invalid(f"phase {phase.get('name')}: at most {MAX_RULES_PER_PHASE} rules")
        phase["rules"] = rebuilt
    return doc


__all__ = ["FieldSpec", "RuleForm", "apply_form", "kinds", "rule_forms", "specs"]
