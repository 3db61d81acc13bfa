"""Readable validation errors: the field path, the value, and what would be valid."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel


def describe_errors(errors: list[dict[str, Any]], root: type[BaseModel]) -> list[dict[str, Any]]:
    """Turn pydantic error dicts into dicts with a dotted `field`, the `input` and a full `msg`.

    Union tags that pydantic puts in the location (`method.basis.chebyshev.degree`) are
    dropped from `field`. An unknown key gets the list of valid keys at that place.
    """
    described = []
    for error in errors:
        kind = error.get("type")
        loc = [part for part in error.get("loc", ()) if part != "body"]
        if kind == "json_invalid":
            loc = []
        model, path = _walk(root, loc[:-1] if kind == "extra_forbidden" else loc)
        if kind == "extra_forbidden":
            path.append(str(loc[-1]))
        message = error.get("msg", "invalid value").removeprefix("Value error, ")
        if kind == "extra_forbidden" and model is not None:
            message = f"unknown field {loc[-1]!r}; valid fields: {', '.join(model.model_fields)}"
        elif kind == "union_tag_not_found":
            message = f"missing 'kind'; valid choices: {', '.join(_tags(root, loc))}"
        elif kind == "json_invalid":
            message = f"invalid JSON at character {error.get('loc', (None, '?'))[-1]}: " \
                      f"{error.get('ctx', {}).get('error', 'cannot parse')}"
        item = {"field": ".".join(path) or "(body)", "msg": message, "type": kind,
                "loc": list(error.get("loc", ()))}
        # A check of the whole body would echo the request back, so only fields get theirs.
        if "input" in error and kind not in ("extra_forbidden", "json_invalid") and path:
            item["input"] = _jsonable(error["input"])
        previous = described[-1] if described else None
        if previous is not None and previous["field"] == item["field"] and \
                previous.get("input") == item.get("input"):
            # One value tried against each member of a plain union (a level or a list of them).
            previous["msg"] = f"{previous['msg']}; or {message[:1].lower()}{message[1:]}"
            continue
        described.append(item)
    return described


def summarize(described: list[dict[str, Any]]) -> str:
    """Return one line per error, `field: message (got value)`."""
    lines = []
    for item in described:
        value = item.get("input")
        shown = "input" in item and not isinstance(value, (dict, list)) and repr(value) not in item["msg"]
        got = f" (got {value!r})" if shown else ""
        lines.append(f"{item['field']}: {item['msg']}{got}")
    return "; ".join(lines)


def _walk(model: Any, loc: list[Any]) -> tuple[type[BaseModel] | None, list[str]]:
    """Follow loc through nested models; return the model reached and the readable path."""
    path: list[str] = []
    current: Any = model
    for part in loc:
        options = _members(current)
        tagged = [m for m in options if _tag(m) == part]
        if tagged:
            current = tagged[0]
            continue
        models = [m for m in options if isinstance(m, type) and issubclass(m, BaseModel)]
        if _is_member_label(part) and not (models and part in models[0].model_fields):
            continue
        path.append(str(part))
        if models and isinstance(part, str) and part in models[0].model_fields:
            current = models[0].model_fields[part].annotation
        elif isinstance(part, int):
            args = [a for m in options for a in typing.get_args(m)]
            current = args[0] if args else None
        else:
            current = None
    members = [m for m in _members(current) if isinstance(m, type) and issubclass(m, BaseModel)]
    return (members[0] if len(members) == 1 else None), path


def _is_member_label(part: Any) -> bool:
    """Return True for the name pydantic gives a member of a plain union in an error's
    location, such as `int`, `list[int]` or `function-after[check(), int]`."""
    return isinstance(part, str) and ("[" in part or part in ("int", "float", "str", "bool", "none"))


def _members(annotation: Any) -> list[Any]:
    """Return the alternatives of a union or Annotated type, or the type itself."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation] if annotation is not None else []


def _tag(member: Any) -> Any:
    """Return the `kind` (or, for models, `name`) literal of a tagged union member, or None."""
    if not (isinstance(member, type) and issubclass(member, BaseModel)):
        return None
    field = member.model_fields.get("kind") or member.model_fields.get("name")
    args = typing.get_args(field.annotation) if field is not None else ()
    return args[0] if len(args) == 1 else None


def _tags(root: Any, loc: list[Any]) -> list[str]:
    """Return the `kind` tags of the tagged union at loc."""
    current: Any = root
    for part in loc:
        models = [m for m in _members(current) if isinstance(m, type) and issubclass(m, BaseModel)]
        field = models[0].model_fields.get(part) if models and isinstance(part, str) else None
        current = field.annotation if field is not None else None
    return [str(_tag(m)) for m in _members(current) if _tag(m) is not None]


MAX_ECHO = 200  # characters of an invalid input echoed back in an error


def _jsonable(value: Any) -> Any:
    """Return value if JSON can carry it, else its repr; long values are cut to MAX_ECHO characters."""
    if isinstance(value, bytes):
        value = repr(value)
    if isinstance(value, str):
        return value if len(value) <= MAX_ECHO else f"{value[:MAX_ECHO]}... ({len(value)} characters)"
    if value is None or isinstance(value, (int, bool)):
        return value
    if isinstance(value, (list, dict)):
        text = repr(value)
        return value if len(text) <= MAX_ECHO else f"{text[:MAX_ECHO]}... ({len(text)} characters)"
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else repr(value)
    return _jsonable(repr(value))
