"""Structural OpenAPI v3 schemas: unknown-field detection, pruning, defaulting and validation.

The order follows kube-apiserver's for custom resources: decode (unknown fields are an error under
`fieldValidation=Strict`, a warning under `Warn`, silently dropped under `Ignore`), prune, apply
defaults, then validate (422 with one cause per violation). CEL rules
(`x-kubernetes-validations`) are not evaluated.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from typing import Any

from .errors import FieldError

Schema = dict[str, Any]

ROOT_FIELDS = ("apiVersion", "kind", "metadata")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_preserve(schema: Schema) -> bool:
    return bool(schema.get("x-kubernetes-preserve-unknown-fields"))


def _props(schema: Schema) -> dict[str, Schema]:
    props: dict[str, Schema] = dict(schema.get("properties") or {})
    # Structural schemas may spread properties across allOf/anyOf/oneOf only as value
    # validations; a property declared there is still "known" for pruning.
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(key) or []:
            for name, sub_schema in (sub.get("properties") or {}).items():
                props.setdefault(name, sub_schema)
    return props


# --- unknown fields and pruning ---------------------------------------------------------------

def prune(value: Any, schema: Schema | None, path: str, unknown: list[str], *, root: bool) -> Any:
    """Drop fields the schema does not declare; record their paths in `unknown`.

    Returns the pruned value (the input is modified in place where it is a dict or list).
    """
    if schema is None or (_is_preserve(schema) and not _props(schema) and "items" not in schema \
            and not isinstance(schema.get("additionalProperties"), dict)):
        return value
    if schema.get("x-kubernetes-int-or-string"):
        return value
    if isinstance(value, dict):
        props = _props(schema)
        additional = schema.get("additionalProperties")
        embedded = root or schema.get("x-kubernetes-embedded-resource")
        for key in list(value):
            if embedded and key in ROOT_FIELDS:
                if key == "metadata" and isinstance(value[key], dict):
                    # ObjectMeta is checked by its own schema when one is declared.
                    meta_schema = props.get("metadata")
                    if meta_schema and meta_schema.get("properties"):
                        prune(value[key], meta_schema, _join(path, key), unknown, root=False)
                continue
            if key in props:
                value[key] = prune(value[key], props[key], _join(path, key), unknown, root=False)
            elif isinstance(additional, dict):
                value[key] = prune(value[key], additional, _join(path, key), unknown, root=False)
            elif additional is True or _is_preserve(schema):
                continue
            else:
                unknown.append(_join(path, key))
                del value[key]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            value[i] = prune(item, schema["items"], f"{path}[{i}]", unknown, root=False)
    return value


# --- defaulting -------------------------------------------------------------------------------

def apply_defaults(value: Any, schema: Schema | None) -> Any:
    """Fill `default`s into present objects (and array items), recursively, like the server."""
    if schema is None:
        return value
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key, sub in props.items():
            if "default" in sub and (key not in value or (value[key] is None
                                     and not sub.get("nullable"))):
                value[key] = json.loads(json.dumps(sub["default"]))
            if key in value:
                value[key] = apply_defaults(value[key], sub)
        additional = schema.get("additionalProperties")
        if isinstance(additional, dict):
            for key in value:
                if key not in props:
                    value[key] = apply_defaults(value[key], additional)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            value[i] = apply_defaults(item, schema["items"])
    return value


def drop_nulls(value: Any, schema: Schema | None) -> Any:
    """Null values of non-nullable fields are pruned before defaulting (apiextensions v1)."""
    if schema is None or not isinstance(value, dict):
        return value
    props = schema.get("properties") or {}
    for key in list(value):
        sub = props.get(key)
        if sub is None:
            continue
        if value[key] is None and not sub.get("nullable") and "default" in sub:
            del value[key]
        else:
            drop_nulls(value[key], sub)
    return value


# --- validation -------------------------------------------------------------------------------

def _render(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if value is None:
        return '"null"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


_JSON_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
}


def _type_name(value: Any) -> str:
    for name in ("boolean", "integer", "number", "string", "array", "object"):
        if _JSON_TYPES[name](value):
            return name
    return "null"


def _check_format(fmt: str, value: str) -> bool:
    try:
        if fmt == "date-time":
            dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        elif fmt == "date":
            dt.date.fromisoformat(value)
        elif fmt == "int-or-string":
            return True
        elif fmt == "byte":
            import base64

            base64.b64decode(value, validate=True)
        elif fmt == "uuid":
            return bool(re.fullmatch(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}", value))
    except ValueError:
        return False
    return True


def validate(value: Any, schema: Schema | None, path: str, errors: list[FieldError]) -> None:
    """Collect schema violations with kube-openapi's wording (`spec.n in body must be ...`)."""
    if schema is None:
        return
    where = path or "<root>"
    if value is None:
        if schema.get("nullable") or not schema.get("type"):
            return
        errors.append(FieldError(
            path, f'Invalid value: "null": {where} in body must be of type {schema["type"]}: '
            '"null"', "FieldValueTypeInvalid"))
        return
    if schema.get("x-kubernetes-int-or-string"):
        if not (_JSON_TYPES["integer"](value) or isinstance(value, str)):
            errors.append(FieldError(
                path, f"Invalid value: {_render(value)}: {where} in body must be of type "
                f"integer,string: {_render(value)}", "FieldValueTypeInvalid"))
            return
    elif (want := schema.get("type")) and not _JSON_TYPES[want](value):
        errors.append(FieldError(
            path, f"Invalid value: {_render(value)}: {where} in body must be of type {want}: "
            f'"{_type_name(value)}"', "FieldValueTypeInvalid"))
        return
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(_render(v) for v in schema["enum"])
        errors.append(FieldError(
            path, f"Unsupported value: {_render(value)}: supported values: {supported}",
            "FieldValueNotSupported"))
    if isinstance(value, int | float) and not isinstance(value, bool):
        _validate_number(value, schema, path, where, errors)
    if isinstance(value, str):
        _validate_string(value, schema, path, where, errors)
    if isinstance(value, list):
        _validate_array(value, schema, path, where, errors)
    if isinstance(value, dict):
        _validate_object(value, schema, path, where, errors)
    for sub in schema.get("allOf") or []:
        validate(value, sub, path, errors)
    for key in ("anyOf", "oneOf"):
        alternatives = schema.get(key)
        if alternatives:
            passing = 0
            for sub in alternatives:
                sub_errors: list[FieldError] = []
                validate(value, sub, path, sub_errors)
                passing += not sub_errors
            if passing == 0 or (key == "oneOf" and passing > 1):
                what = "any of" if key == "anyOf" else "only one of"
                errors.append(FieldError(
                    path, f"Invalid value: {_render(value)}: {where} in body must validate "
                    f"{what} the schemas", "FieldValueInvalid"))
    if "not" in schema:
        sub_errors = []
        validate(value, schema["not"], path, sub_errors)
        if not sub_errors:
            errors.append(FieldError(path, f"Invalid value: {_render(value)}: {where} in body "
                                     "must not validate the schema (not)"))


def _validate_number(value: float, schema: Schema, path: str, where: str,
                     errors: list[FieldError]) -> None:
    shown = _render(value)
    if "minimum" in schema:
        lo = schema["minimum"]
        if schema.get("exclusiveMinimum") and value <= lo:
            errors.append(FieldError(path, f"Invalid value: {shown}: {where} in body should be "
                                     f"greater than {lo}"))
        elif value < lo:
            errors.append(FieldError(path, f"Invalid value: {shown}: {where} in body should be "
                                     f"greater than or equal to {lo}"))
    if "maximum" in schema:
        hi = schema["maximum"]
        if schema.get("exclusiveMaximum") and value >= hi:
            errors.append(FieldError(path, f"Invalid value: {shown}: {where} in body should be "
                                     f"less than {hi}"))
        elif value > hi:
            errors.append(FieldError(path, f"Invalid value: {shown}: {where} in body should be "
                                     f"less than or equal to {hi}"))
    if "multipleOf" in schema:
        factor = schema["multipleOf"]
        if not math.isclose(value / factor, round(value / factor)):
            errors.append(FieldError(path, f"Invalid value: {shown}: {where} in body should be "
                                     f"a multiple of {factor}"))


def _validate_string(value: str, schema: Schema, path: str, where: str,
                     errors: list[FieldError]) -> None:
    shown = _render(value)
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(FieldError(path, f"Invalid value: {shown}: {where} in body should be at "
                                 f"least {schema['minLength']} chars long"))
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(FieldError(path, f"Too long: may not be more than {schema['maxLength']} "
                                 "bytes", "FieldValueTooLong"))
    if "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(FieldError(path, f"Invalid value: {shown}: {where} in body should match "
                                 f"'{schema['pattern']}'"))
    fmt = schema.get("format")
    if fmt and not _check_format(fmt, value):
        errors.append(FieldError(path, f"Invalid value: {shown}: {where} in body must be of "
                                 f"type {fmt}: {shown}"))


def _validate_array(value: list[Any], schema: Schema, path: str, where: str,
                    errors: list[FieldError]) -> None:
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(FieldError(path, f"Invalid value: {len(value)}: {where} in body should "
                                 f"have at least {schema['minItems']} items"))
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(FieldError(path, f"Too many: {len(value)}: must have at most "
                                 f"{schema['maxItems']} items", "FieldValueTooMany"))
    list_type = schema.get("x-kubernetes-list-type")
    if schema.get("uniqueItems") or list_type == "set":
        seen: list[str] = []
        for i, item in enumerate(value):
            key = json.dumps(item, sort_keys=True)
            if key in seen:
                errors.append(FieldError(f"{path}[{i}]", f"Duplicate value: {_render(item)}",
                                         "FieldValueDuplicate"))
            seen.append(key)
    if list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen_keys: list[str] = []
        for i, item in enumerate(value):
            if isinstance(item, dict):
                key = json.dumps({k: item.get(k) for k in keys}, sort_keys=True)
                if key in seen_keys:
                    errors.append(FieldError(f"{path}[{i}]", f"Duplicate value: {key}",
                                             "FieldValueDuplicate"))
                seen_keys.append(key)
    if isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            validate(item, schema["items"], f"{path}[{i}]", errors)


def _validate_object(value: dict[str, Any], schema: Schema, path: str, where: str,
                     errors: list[FieldError]) -> None:
    for name in schema.get("required") or []:
        if name not in value:
            errors.append(FieldError(_join(path, name), "Required value", "FieldValueRequired"))
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        errors.append(FieldError(path, f"Invalid value: {len(value)}: {where} in body should "
                                 f"have at least {schema['minProperties']} properties"))
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        errors.append(FieldError(path, f"Too many: {len(value)}: must have at most "
                                 f"{schema['maxProperties']} items", "FieldValueTooMany"))
    props = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    for key, item in value.items():
        if key in props:
            validate(item, props[key], _join(path, key), errors)
        elif isinstance(additional, dict):
            validate(item, additional, _join(path, key), errors)


# --- structural checks on a CRD's own schema ---------------------------------------------------

def structural_errors(schema: Any, path: str) -> list[FieldError]:
    """The few structural-schema rules whose violation a CRD author is likely to hit."""
    errs: list[FieldError] = []
    if not isinstance(schema, dict):
        return [FieldError(path, "Required value: must be an object", "FieldValueRequired")]
    has_type = "type" in schema or schema.get("x-kubernetes-int-or-string") \
        or schema.get("x-kubernetes-preserve-unknown-fields")
    if not has_type:
        errs.append(FieldError(_join(path, "type"), "Required value: must not be empty for "
                               "specified object fields", "FieldValueRequired"))
    if schema.get("type") == "array" and "items" not in schema:
        errs.append(FieldError(_join(path, "items"), "Required value: must be specified",
                               "FieldValueRequired"))
    if schema.get("properties") and schema.get("additionalProperties") not in (None, False):
        errs.append(FieldError(_join(path, "additionalProperties"),
                               "Forbidden: additionalProperties and properties are mutual "
                               "exclusive", "FieldValueForbidden"))
    for name, sub in (schema.get("properties") or {}).items():
        errs += structural_errors(sub, f"{path}.properties[{name}]")
    if isinstance(schema.get("items"), dict):
        errs += structural_errors(schema["items"], f"{path}.items")
    if isinstance(schema.get("additionalProperties"), dict):
        errs += structural_errors(schema["additionalProperties"], f"{path}.additionalProperties")
    return errs
