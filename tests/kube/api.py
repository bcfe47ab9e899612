"""The API machinery: the registry of served types and create/get/list/update/patch/delete.

The HTTP server and the in-process controllers (kubelet, Job controller, garbage collector) both
go through this class, so finalizers, the status subresource, generation, conflicts and
validation apply to every writer alike, as they do in a real cluster.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import builtins_logic, errors, patches, schema
from .errors import ApiError, FieldError, Warnings
from .resources import ResourceType, builtin_types, crd_to_type
from .selectors import (
    fields_match,
    parse_field_selector,
    parse_label_selector,
)
from .store import Store, TypeKey
from .util import deep, now, rfc3339

Obj = dict[str, Any]

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
CRD_KEY: TypeKey = ("apiextensions.k8s.io", "customresourcedefinitions")
NS_KEY: TypeKey = ("", "namespaces")


@dataclass
class WriteOptions:
    field_validation: str = "Warn"  # Strict, Warn or Ignore (the server's default is Warn)
    dry_run: bool = False
    warnings: Warnings | None = None


def _random_suffix(n: int = 5) -> str:
    # The alphabet of k8s.io/apimachinery/pkg/util/rand (no vowels, no confusable digits).
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _strip_volatile(obj: Obj) -> Obj:
    copy = deep(obj)
    copy["metadata"].pop("resourceVersion", None)
    copy["metadata"].pop("managedFields", None)
    return copy


class Api:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.types: dict[TypeKey, ResourceType] = {}
        # Called with (type, object) after a CRD changes the set of served types.
        self.on_types_changed: list[Callable[[], None]] = []
        for rt in builtin_types():
            self.types[rt.key] = rt
        for ns in DEFAULT_NAMESPACES:
            self.create(self.types[NS_KEY], "v1", None,
                        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

    # --- type lookup ---------------------------------------------------------------------

    def lookup(self, group: str, version: str, plural: str) -> ResourceType:
        rt = self.types.get((group, plural))
        if rt is None or version not in rt.versions or not rt.versions[version].served:
            raise errors.resource_not_found()
        return rt

    def type_for_kind(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        for rt in self.types.values():
            if rt.group == group and rt.kind == kind and version in rt.versions:
                return rt
        return None

    def served_group_versions(self) -> dict[str, list[str]]:
        """group -> served versions (storage version first), groups in a stable order."""
        out: dict[str, list[str]] = {}
        for rt in self.types.values():
            served = [v.name for v in rt.versions.values() if v.served]
            served.sort(key=lambda v: v != rt.storage_version)
            bucket = out.setdefault(rt.group, [])
            bucket += [v for v in served if v not in bucket]
        return out

    # --- reads ---------------------------------------------------------------------------

    def _present(self, rt: ResourceType, version: str, obj: Obj) -> Obj:
        out = deep(obj)
        out["apiVersion"] = rt.api_version(version)
        out["kind"] = rt.kind
        if not rt.builtin:
            # Defaults apply on read too, so objects stored before a default existed get it.
            schema.apply_defaults(out, rt.versions[version].schema)
        return out

    def get(self, rt: ResourceType, version: str, namespace: str | None, name: str) -> Obj:
        obj = self.store.get(rt.key, namespace or "", name)
        if obj is None:
            raise errors.not_found(rt.plural, rt.group, name)
        return self._present(rt, version, obj)

    def list(
        self,
        rt: ResourceType,
        version: str,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> tuple[list[Obj], str, str | None, int | None]:
        """Items, list resourceVersion, continue token, remaining item count."""
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(field_selector, rt.plural)
        items = [
            o for o in self.store.select(rt.key, namespace if rt.namespaced else None, labels)
            if fields_match(fields, o)
        ]
        list_rv = str(self.store.rv)
        if continue_token:
            try:
                token = json.loads(base64.urlsafe_b64decode(continue_token.encode()))
                start, list_rv = token["start"], str(token["rv"])
            except (ValueError, KeyError) as exc:
                raise errors.bad_request("continue key is not valid") from exc
            if int(list_rv) < self.store.compacted_rv:
                raise ApiError(410, "Expired", "The provided continue parameter is too old to "
                               "display a consistent list result. You can start a new list "
                               "without the continue parameter.")
            items = [o for o in items if _sort_key(o) > start]
        next_token = None
        remaining = None
        if limit and len(items) > limit:
            remaining = len(items) - limit
            items = items[:limit]
            payload = {"rv": int(list_rv), "start": _sort_key(items[-1])}
            next_token = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()
        return [self._present(rt, version, o) for o in items], list_rv, next_token, remaining

    # --- admission -----------------------------------------------------------------------

    def _check_body(self, rt: ResourceType, version: str, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request was not a JSON object")
        expected = rt.api_version(version)
        if body.get("apiVersion") not in (None, expected):
            raise errors.bad_request(
                f"the API version in the data ({body.get('apiVersion')}) does not match the "
                f"expected API version ({expected})")
        if body.get("kind") not in (None, rt.kind):
            raise errors.bad_request(
                f"the kind in the data ({body.get('kind')}) does not match the expected kind "
                f"({rt.kind})")
        body = deep(body)
        body["apiVersion"], body["kind"] = expected, rt.kind
        if not isinstance(body.get("metadata"), dict):
            body["metadata"] = {}
        return body

    def _decode(self, rt: ResourceType, version: str, obj: Obj, opts: WriteOptions) -> None:
        """Unknown fields: Strict rejects (400), Warn warns and prunes, Ignore prunes."""
        unknown: list[str] = []
        schema.prune(obj, rt.versions[version].schema, "", unknown, root=True)
        if not unknown:
            return
        if opts.field_validation == "Strict":
            listed = ", ".join(f'unknown field "{u}"' for u in unknown)
            raise errors.bad_request(
                f"{rt.kind} in version \"{version}\" cannot be handled as a {rt.kind}: "
                f"strict decoding error: {listed}")
        if opts.field_validation == "Warn" and opts.warnings is not None:
            for u in unknown:
                opts.warnings.add(f'unknown field "{u}"')

    def _validate(self, rt: ResourceType, version: str, obj: Obj, old: Obj | None) -> None:
        errs: list[FieldError] = []
        meta = obj["metadata"]
        errs += builtins_logic.validate_meta(rt, meta)
        if not rt.builtin:
            schema.drop_nulls(obj, rt.versions[version].schema)
            schema.apply_defaults(obj, rt.versions[version].schema)
            body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
            schema.validate(body, rt.versions[version].schema, "", errs)
        errs += builtins_logic.validate(self, rt, obj, old)
        if errs:
            raise errors.invalid(rt.kind, rt.group, meta.get("name", ""), errs)

    def _ensure_namespace(self, rt: ResourceType, namespace: str | None) -> None:
        if not rt.namespaced:
            return
        ns = self.store.get(NS_KEY, "", namespace or "")
        if ns is None:
            raise errors.not_found("namespaces", "", namespace or "")
        if ns["metadata"].get("deletionTimestamp"):
            raise ApiError(403, "Forbidden",
                           f'{errors.qualified(rt.plural, rt.group)} "{namespace}" is forbidden: '
                           f"unable to create new content in namespace {namespace} because it "
                           "is being terminated")

    # --- writes --------------------------------------------------------------------------

    def create(self, rt: ResourceType, version: str, namespace: str | None, body: Any,
               opts: WriteOptions | None = None) -> Obj:
        opts = opts or WriteOptions()
        obj = self._check_body(rt, version, body)
        meta = obj["metadata"]
        if rt.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise errors.bad_request("the namespace of the provided object does not match "
                                         "the namespace sent on the request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + _random_suffix()
            else:
                raise errors.invalid(rt.kind, rt.group, "", [FieldError(
                    "metadata.name", "Required value: name or generateName is required",
                    "FieldValueRequired")])
        self._decode(rt, version, obj, opts)
        if rt.has_status(version) and not rt.builtin:
            obj.pop("status", None)  # the status subresource owns status
        for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion",
                    "managedFields", "selfLink"):
            meta.pop(key, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = rfc3339()
        if rt.tracks_generation:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        builtins_logic.default(self, rt, obj, None)
        self._validate(rt, version, obj, None)
        self._ensure_namespace(rt, namespace)
        if self.store.get(rt.key, namespace or "", meta["name"]) is not None:
            raise errors.already_exists(rt.plural, rt.group, meta["name"])
        obj["apiVersion"] = rt.api_version(rt.storage_version)
        if opts.dry_run:
            return self._present(rt, version, obj)
        stored = self.store.put(rt.key, obj)
        builtins_logic.after_write(self, rt, stored, None)
        return self._present(rt, version, stored)

    def update(self, rt: ResourceType, version: str, namespace: str | None, name: str,
               body: Any, opts: WriteOptions | None = None, *, subresource: str | None = None,
               require_rv: bool | None = None) -> Obj:
        opts = opts or WriteOptions()
        obj = self._check_body(rt, version, body)
        meta = obj["metadata"]
        if meta.get("name") not in (None, name):
            raise errors.bad_request(f"the name of the object ({meta.get('name')}) does not match "
                                     f"the name on the URL ({name})")
        if rt.namespaced and meta.get("namespace") not in (None, "", namespace):
            raise errors.bad_request("the namespace of the provided object does not match the "
                                     "namespace sent on the request")
        old = self.store.get(rt.key, namespace or "", name)
        if old is None:
            raise errors.not_found(rt.plural, rt.group, name)
        rv = meta.get("resourceVersion")
        needs_rv = not rt.unconditional_update if require_rv is None else require_rv
        if not rv and needs_rv:
            raise errors.invalid(rt.kind, rt.group, name, [FieldError(
                "metadata.resourceVersion", "Invalid value: 0x0: must be specified for an "
                "update")])
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise errors.conflict(rt.plural, rt.group, name)
        return self._commit(rt, version, old, obj, opts, subresource)

    def patch(self, rt: ResourceType, version: str, namespace: str | None, name: str,
              content_type: str, patch_body: Any, opts: WriteOptions | None = None, *,
              subresource: str | None = None) -> Obj:
        opts = opts or WriteOptions()
        ctype = content_type.split(";")[0].strip()
        if ctype == "application/apply-patch+yaml":
            raise ApiError(415, "UnsupportedMediaType", "server-side apply is not supported by "
                           "the Stagegate test emulator: use client-side kubectl apply")
        old = self.store.get(rt.key, namespace or "", name)
        if old is None:
            raise errors.not_found(rt.plural, rt.group, name)
        current = self._present(rt, version, old)
        if ctype == "application/json-patch+json":
            new = patches.json_patch(current, patch_body)
        elif ctype == "application/merge-patch+json":
            if not isinstance(patch_body, dict):
                raise errors.bad_request("the body of the request was not a JSON object")
            new = patches.merge_patch(current, patch_body)
        elif ctype == "application/strategic-merge-patch+json":
            if not rt.builtin:
                raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an "
                               "unknown format - accepted media types include: "
                               "application/json-patch+json, application/merge-patch+json, "
                               "application/apply-patch+yaml")
            new = patches.strategic_merge(current, patch_body)
        else:
            raise errors.unsupported_media_type(ctype)
        if not isinstance(new, dict):
            raise errors.bad_request("the patched object is not a JSON object")
        new = self._check_body(rt, version, new)
        new_meta = new["metadata"]
        if new_meta.get("name") != name:
            raise errors.bad_request("metadata.name cannot be changed by a patch")
        rv = new_meta.get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise errors.conflict(rt.plural, rt.group, name)
        return self._commit(rt, version, old, new, opts, subresource)

    def _commit(self, rt: ResourceType, version: str, old: Obj, new: Obj, opts: WriteOptions,
                subresource: str | None) -> Obj:
        self._decode(rt, version, new, opts)
        if subresource == "status":
            merged = deep(old)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            if rt.builtin:
                # Built-in status updates may also touch labels and annotations.
                for key in ("labels", "annotations"):
                    if key in new["metadata"]:
                        merged["metadata"][key] = new["metadata"][key]
            new = merged
        elif subresource is not None:
            raise errors.method_not_allowed()
        elif rt.has_status(version) or (rt.builtin and "status" in rt.subresources):
            if "status" in old:
                new["status"] = deep(old["status"])
            else:
                new.pop("status", None)
        meta, old_meta = new["metadata"], old["metadata"]
        # System-owned metadata cannot be changed by clients.
        for key in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                    "generation", "namespace", "name"):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        meta.pop("managedFields", None)
        meta["resourceVersion"] = old_meta["resourceVersion"]
        builtins_logic.default(self, rt, new, old)
        if rt.tracks_generation and self._spec_changed(rt, version, old, new):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        self._validate(rt, version, new, old)
        new["apiVersion"] = rt.api_version(rt.storage_version)
        if _strip_volatile(new) == _strip_volatile(old):
            return self._present(rt, version, old)  # a no-op write does not bump the version
        if opts.dry_run:
            return self._present(rt, version, new)
        if meta.get("deletionTimestamp") and not meta.get("finalizers") \
                and not self._graceful_pending(rt, new) and rt.key != NS_KEY:
            final = self.store.remove(rt.key, meta.get("namespace", ""), meta["name"], final=new)
            assert final is not None
            builtins_logic.after_delete(self, rt, final)
            return self._present(rt, version, final)
        stored = self.store.put(rt.key, new)
        builtins_logic.after_write(self, rt, stored, old)
        return self._present(rt, version, stored)

    def _spec_changed(self, rt: ResourceType, version: str, old: Obj, new: Obj) -> bool:
        skip = {"metadata", "apiVersion", "kind"}
        if rt.has_status(version) or "status" in rt.subresources:
            skip.add("status")
        def body(o: Obj) -> Obj:
            return {k: v for k, v in o.items() if k not in skip}
        return body(old) != body(new)

    def _graceful_pending(self, rt: ResourceType, obj: Obj) -> bool:
        # Pods under graceful deletion stay until the kubelet confirms their processes ended.
        return rt.key == ("", "pods") and bool(obj["metadata"].get("deletionGracePeriodSeconds"))

    def delete(self, rt: ResourceType, version: str, namespace: str | None, name: str,
               options: Obj | None = None, *, dry_run: bool = False) -> tuple[Obj, bool]:
        """Delete (or start deleting) an object; returns (object, deleted_now)."""
        options = options or {}
        old = self.store.get(rt.key, namespace or "", name)
        if old is None:
            raise errors.not_found(rt.plural, rt.group, name)
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
            raise ApiError(409, "Conflict", f"Precondition failed: UID in precondition: "
                           f"{pre['uid']}, UID in object meta: {old['metadata']['uid']}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != \
                old["metadata"]["resourceVersion"]:
            raise errors.conflict(rt.plural, rt.group, name)
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is not None:
            policy = "Orphan" if options["orphanDependents"] else "Background"
        if policy is None:
            # batch/v1 Jobs keep their legacy default: deleting one orphans its pods.
            policy = "Orphan" if rt.key == ("batch", "jobs") else "Background"
        if policy not in ("Orphan", "Background", "Foreground"):
            raise errors.invalid("DeleteOptions", "", "", [FieldError(
                "propagationPolicy", f'Unsupported value: "{policy}": supported values: '
                '"Foreground", "Background", "Orphan", "nil"', "FieldValueNotSupported")])
        obj = deep(old)
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if meta.get("deletionTimestamp"):
            if policy == "Foreground" and FOREGROUND not in finalizers:
                finalizers.append(FOREGROUND)
            elif policy == "Orphan" and ORPHAN not in finalizers and FOREGROUND not in finalizers:
                finalizers.append(ORPHAN)
            if finalizers != (meta.get("finalizers") or []):
                meta["finalizers"] = finalizers
                if not dry_run:
                    obj = self.store.put(rt.key, obj)
            grace = options.get("gracePeriodSeconds")
            if grace == 0 and self._graceful_pending(rt, obj) and not dry_run:
                return self._finish_graceful(rt, version, obj)
            return self._present(rt, version, obj), False
        has_dependents = self.has_dependents(meta["uid"])
        if policy == "Foreground" and has_dependents:
            finalizers.append(FOREGROUND)
        elif policy == "Orphan" and has_dependents:
            finalizers.append(ORPHAN)
        grace = builtins_logic.grace_period(rt, obj, options.get("gracePeriodSeconds"))
        # Namespaces always pass through Terminating: their contents are deleted first.
        if not finalizers and not grace and rt.key != NS_KEY:
            if dry_run:
                return self._present(rt, version, obj), True
            final = self.store.remove(rt.key, namespace or "", name)
            assert final is not None
            builtins_logic.after_delete(self, rt, final)
            return self._present(rt, version, final), True
        meta["finalizers"] = finalizers
        if not finalizers:
            meta.pop("finalizers")
        stamp = now() + dt.timedelta(seconds=grace or 0)
        meta["deletionTimestamp"] = rfc3339(stamp)
        meta["deletionGracePeriodSeconds"] = grace or 0
        if rt.tracks_generation:
            meta["generation"] = int(meta.get("generation", 1)) + 1
        if rt.key == NS_KEY:
            obj.setdefault("status", {})["phase"] = "Terminating"
        if dry_run:
            return self._present(rt, version, obj), False
        stored = self.store.put(rt.key, obj)
        builtins_logic.after_write(self, rt, stored, old)
        return self._present(rt, version, stored), False

    def _finish_graceful(self, rt: ResourceType, version: str, obj: Obj) -> tuple[Obj, bool]:
        meta = obj["metadata"]
        if meta.get("finalizers"):
            meta["deletionGracePeriodSeconds"] = 0
            return self._present(rt, version, self.store.put(rt.key, obj)), False
        final = self.store.remove(rt.key, meta.get("namespace", ""), meta["name"])
        assert final is not None
        builtins_logic.after_delete(self, rt, final)
        return self._present(rt, version, final), True

    def has_dependents(self, uid: str) -> bool:
        return self.store.has_dependents(uid)  # the store indexes ownerReferences by owner uid

    # --- helpers for controllers ---------------------------------------------------------

    def type(self, key: TypeKey) -> ResourceType:
        return self.types[key]

    def write_status(self, key: TypeKey, obj: Obj) -> Obj | None:
        """Controllers' status writes: unconditional, via the status subresource."""
        rt = self.types[key]
        meta = obj["metadata"]
        try:
            return self.update(rt, rt.storage_version, meta.get("namespace"), meta["name"],
                               {**obj, "metadata": {**meta, "resourceVersion": None}},
                               subresource="status", require_rv=False)
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise

    # --- CRD registration ----------------------------------------------------------------

    def register_crd(self, crd: Obj) -> None:
        rt = crd_to_type(crd)
        self.types[rt.key] = rt
        for cb in self.on_types_changed:
            cb()

    def unregister_crd(self, crd: Obj) -> None:
        spec = crd["spec"]
        key = (spec["group"], spec["names"]["plural"])
        self.types.pop(key, None)
        self.store.drop_type(key)
        for cb in self.on_types_changed:
            cb()


def _sort_key(obj: Obj) -> str:
    return f"{obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"


def decode_secret_string_data(obj: Obj) -> None:
    string_data = obj.pop("stringData", None)
    if string_data:
        data = obj.setdefault("data", {})
        for k, v in string_data.items():
            data[k] = base64.b64encode(str(v).encode()).decode()

