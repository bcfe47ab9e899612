"""JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic-merge patch.

Strategic merge is what client-side `kubectl apply` sends for built-in kinds: lists of named
things (containers, env, ports, volumes, conditions, ...) merge by a key instead of being replaced,
and the `$patch`, `$retainKeys`, `$setElementOrder/...` and `$deleteFromPrimitiveList/...`
directives apply. The merge keys below are those of the k8s.io/api Go struct tags.
"""

from __future__ import annotations

from typing import Any

from .errors import ApiError
from .util import deep


class PatchError(ApiError):
    def __init__(self, message: str, code: int = 422, reason: str = "Invalid") -> None:
        super().__init__(code, reason, message)


# --- merge patch ------------------------------------------------------------------------------

def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return deep(patch)
    result = deep(target) if isinstance(target, dict) else {}
    _merge_into(result, patch)
    return result


def _merge_into(result: dict[str, Any], patch: dict[str, Any]) -> None:
    """merge_patch on a target that is already a private copy: no copy per nesting level."""
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            current = result.get(key)
            if not isinstance(current, dict):
                current = result[key] = {}
            _merge_into(current, value)
        else:
            result[key] = deep(value)


# --- JSON patch -------------------------------------------------------------------------------

def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}", 400, "BadRequest")
    return [_unescape(t) for t in path[1:].split("/")]


def _parent(doc: Any, tokens: list[str], path: str) -> Any:
    cur = doc
    for t in tokens[:-1]:
        if isinstance(cur, dict) and t in cur:
            cur = cur[t]
        elif isinstance(cur, list) and t.isdigit() and int(t) < len(cur):
            cur = cur[int(t)]
        else:
            raise PatchError(f"doc is missing path: {path!r}: missing value")
    return cur


def _get(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise PatchError(f"doc is missing path: {path!r}: missing value")


def _remove(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise PatchError(f"doc is missing path: {path!r}: missing value")


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise PatchError(f"add operation does not apply: doc is missing path: {path!r}")
    else:
        raise PatchError(f"add operation does not apply: doc is missing path: {path!r}")
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise PatchError("json patch must be a list of operations", 400, "BadRequest")
    doc = deep(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op:
            raise PatchError("invalid JSON patch operation", 400, "BadRequest")
        kind, path = op["op"], op.get("path", "")
        if kind == "add":
            doc = _add(doc, path, deep(op.get("value")))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            tokens = _pointer(path)
            if not tokens:
                doc = deep(op.get("value"))
                continue
            _get(doc, path)  # must exist
            parent = _parent(doc, tokens, path)
            key: Any = int(tokens[-1]) if isinstance(parent, list) else tokens[-1]
            parent[key] = deep(op.get("value"))
        elif kind == "move":
            value = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "copy":
            doc = _add(doc, path, deep(_get(doc, op["from"])))
        elif kind == "test":
            try:
                got = _get(doc, path)
            except PatchError:
                got = None
            if got != op.get("value"):
                # kube-apiserver answers 422 (Invalid) when a test operation fails.
                raise PatchError(f"the server rejected our request due to an error in our "
                                 f"request: testing value {path} failed: test failed")
        else:
            raise PatchError(f"unexpected kind: {kind}", 400, "BadRequest")
    return doc


# --- strategic merge --------------------------------------------------------------------------

# (path pattern with "*" for list items) -> merge key. Paths are relative to the object root.
_MERGE_KEYS: dict[tuple[str, ...], str] = {}


def _register(prefixes: list[tuple[str, ...]], rel: tuple[str, ...], key: str) -> None:
    for prefix in prefixes:
        _MERGE_KEYS[prefix + rel] = key


_POD_SPECS = [("spec",), ("spec", "template", "spec")]
_CONTAINER_LISTS = ["containers", "initContainers", "ephemeralContainers"]
for _c in _CONTAINER_LISTS:
    _register(_POD_SPECS, (_c,), "name")
    _register(_POD_SPECS, (_c, "*", "env"), "name")
    _register(_POD_SPECS, (_c, "*", "ports"), "containerPort")
    _register(_POD_SPECS, (_c, "*", "volumeMounts"), "mountPath")
    _register(_POD_SPECS, (_c, "*", "volumeDevices"), "devicePath")
    _register(_POD_SPECS, (_c, "*", "resizePolicy"), "resourceName")
_register(_POD_SPECS, ("volumes",), "name")
_register(_POD_SPECS, ("imagePullSecrets",), "name")
_register(_POD_SPECS, ("hostAliases",), "ip")
_register(_POD_SPECS, ("topologySpreadConstraints",), "topologyKey")
_register(_POD_SPECS, ("schedulingGates",), "name")
_register(_POD_SPECS, ("resourceClaims",), "name")
# Service ports; no other built-in kind has spec.ports.
_register([()], ("spec", "ports"), "port")
_register([()], ("status", "conditions"), "type")
_register([()], ("metadata", "ownerReferences"), "uid")
_register([("spec", "template")], ("metadata", "ownerReferences"), "uid")
_register([()], ("status", "containerStatuses"), "name")

# Primitive lists with patchStrategy=merge: elements are unioned rather than replaced.
_MERGE_PRIMITIVE: set[tuple[str, ...]] = {("metadata", "finalizers"),
                                          ("spec", "template", "metadata", "finalizers")}


def strategic_merge(target: Any, patch: Any, path: tuple[str, ...] = ()) -> Any:
    if not isinstance(patch, dict):
        return deep(patch)
    if patch.get("$patch") == "replace":
        return {k: deep(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = deep(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field_name = key.split("/", 1)[1]
            if isinstance(result.get(field_name), list):
                result[field_name] = [v for v in result[field_name] if v not in value]
            continue
        sub_path = (*path, key)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, sub_path)
        elif isinstance(value, dict):
            merged = strategic_merge(result.get(key), value, sub_path)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = deep(value)
    if isinstance(retain, list):
        for key in list(result):
            if key not in retain:
                del result[key]
    return result


def _merge_list(current: Any, patch: list[Any], path: tuple[str, ...]) -> list[Any]:
    merge_key = _MERGE_KEYS.get(path)
    if path in _MERGE_PRIMITIVE:
        out = list(current or [])
        out += [v for v in patch if v not in out]
        return out
    if merge_key is None:
        return deep([v for v in patch if not (isinstance(v, dict) and "$patch" in v)])
    out = deep(current) if isinstance(current, list) else []
    if any(isinstance(v, dict) and v.get("$patch") == "replace" for v in patch):
        return [deep(v) for v in patch if not (isinstance(v, dict) and "$patch" in v)]
    for item in patch:
        if not isinstance(item, dict):
            continue
        ident = item.get(merge_key)
        index = next((i for i, cur in enumerate(out)
                      if isinstance(cur, dict) and cur.get(merge_key) == ident), None)
        if item.get("$patch") == "delete":
            if index is not None:
                out.pop(index)
            continue
        if index is None:
            out.append(strategic_merge({}, item, (*path, "*")))
        else:
            out[index] = strategic_merge(out[index], item, (*path, "*"))
    return out
