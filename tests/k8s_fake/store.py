"""In-memory object store with Kubernetes API semantics (no HTTP here; see server.py).

Thread-safe: every operation takes one re-entrant lock, so the HTTP server (its own asyncio loop), the
kubelet simulator (threads) and test code can all use it at once. Each change is appended to an event log
(one monotonically increasing resourceVersion for the whole store, as with etcd), which watches replay.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import gzip
import importlib.resources
import json
import random
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
GENERATE_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet the real apiserver uses for generateName


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """An error the API answers with a ``kind: Status`` body."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> Obj:
        body: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                     "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            body["details"] = self.details
        return body


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.qualified} "{name}" not found',
                    {"name": name, "group": rt.group, "kind": rt.plural})


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def invalid(rt: ResourceType, name: str, message: str) -> ApiError:
    return ApiError(422, "Invalid", f'{rt.kind} "{name}" is invalid: {message}',
                    {"name": name, "group": rt.group, "kind": rt.kind})


# --------------------------------------------------------------------------------------------- resource types
@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    verbs: tuple[str, ...] = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: frozenset[str] = frozenset()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:  # how the apiserver names a resource in messages: "jobs.batch"
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def discovery(self) -> list[Obj]:
        entry = {"name": self.plural, "singularName": self.singular or self.kind.lower(),
                 "namespaced": self.namespaced, "kind": self.kind, "verbs": list(self.verbs)}
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        subs = [{"name": f"{self.plural}/{s}", "singularName": "", "namespaced": self.namespaced,
                 "kind": self.kind, "verbs": ["get", "patch", "update"]} for s in sorted(self.subresources)]
        return [entry, *subs]


MONITORING = [  # prometheus-operator CRDs (optional): what a ServiceMonitor-shipping chart needs
    ResourceType("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor", True, "servicemonitor",
                 short_names=("smon",)),
    ResourceType("monitoring.coreos.com", "v1", "podmonitors", "PodMonitor", True, "podmonitor",
                 short_names=("pmon",)),
    ResourceType("monitoring.coreos.com", "v1", "prometheusrules", "PrometheusRule", True, "prometheusrule",
                 short_names=("promrule",)),
]


def bundled_resource_types() -> list[ResourceType]:
    """Built-in resources from kmock's bundled discovery dump (a k3s cluster), in discovery order."""
    raw = importlib.resources.files("kmock._internal").joinpath("resources.json.gz").read_bytes()
    out: list[ResourceType] = []
    for doc in json.loads(gzip.decompress(raw)):
        group, _, version = doc["groupVersion"].rpartition("/")
        subs: dict[str, set[str]] = {}
        for r in doc["resources"]:
            if "/" in r["name"]:
                parent, sub = r["name"].split("/", 1)
                subs.setdefault(parent, set()).add(sub)
        for r in doc["resources"]:
            if "/" in r["name"]:
                continue
            out.append(ResourceType(group, version, r["name"], r["kind"], bool(r.get("namespaced")),
                                    r.get("singularName") or "", tuple(r.get("verbs", ())),
                                    tuple(r.get("shortNames", ())), tuple(r.get("categories", ())),
                                    frozenset(subs.get(r["name"], ()))))
    return out


# ------------------------------------------------------------------------------------------------- selectors
_REQ_SET = re.compile(r"^\s*([^\s!=(),]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_REQ_CMP = re.compile(r"^\s*([^\s!=(),]+)\s*(==|!=|=)\s*([^\s!=(),]*)\s*$")
_REQ_EXISTS = re.compile(r"^\s*(!?)\s*([^\s!=(),]+)\s*$")


def _split_top(s: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in s:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p for p in parts if p.strip()]


Matcher = Callable[[Mapping[str, str]], bool]


def parse_label_selector(selector: str | None) -> Matcher:
    """``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a`` joined by commas (AND)."""
    reqs: list[Matcher] = []
    for part in _split_top(selector or ""):
        if m := _REQ_SET.match(part):
            key, op, vals = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}
            if op == "in":
                reqs.append(lambda lb, k=key, vs=vals: lb.get(k) in vs)
            else:
                reqs.append(lambda lb, k=key, vs=vals: lb.get(k) not in vs)
        elif m := _REQ_CMP.match(part):
            key, op, val = m.groups()
            if op == "!=":
                reqs.append(lambda lb, k=key, v=val: lb.get(k) != v)
            else:
                reqs.append(lambda lb, k=key, v=val: lb.get(k) == v)
        elif m := _REQ_EXISTS.match(part):
            neg, key = m.groups()
            reqs.append(lambda lb, k=key, n=bool(neg): (k in lb) != n)
        else:
            raise bad_request(f"unable to parse requirement: {part!r}")
    return lambda labels: all(r(labels) for r in reqs)


def _field(obj: Obj, path: str) -> str:
    cur: Any = obj
    for p in path.split("."):
        cur = cur.get(p) if isinstance(cur, dict) else None
    if cur is None:
        return ""
    return str(cur).lower() if isinstance(cur, bool) else str(cur)


def parse_field_selector(selector: str | None) -> Callable[[Obj], bool]:
    """``metadata.name=x``, ``status.phase!=Running`` ... (any dotted path; the real API allows fewer)."""
    reqs: list[Callable[[Obj], bool]] = []
    for part in _split_top(selector or ""):
        m = _REQ_CMP.match(part)
        if not m:
            raise bad_request(f"invalid field selector: {part!r}")
        path, op, val = m.groups()
        if op == "!=":
            reqs.append(lambda o, p=path, v=val: _field(o, p) != v)
        else:
            reqs.append(lambda o, p=path, v=val: _field(o, p) == v)
    return lambda obj: all(r(obj) for r in reqs)


def selector_matcher(label_selector: str | None, field_selector: str | None) -> Callable[[Obj], bool]:
    lm, fm = parse_label_selector(label_selector), parse_field_selector(field_selector)
    return lambda o: lm((o.get("metadata") or {}).get("labels") or {}) and fm(o)


# --------------------------------------------------------------------------------------------------- patches
def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (``null`` deletes a key; lists are replaced)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


_MERGE_KEYS = ("name", "mountPath", "containerPort", "type", "devicePath", "ip", "topologyKey")


def strategic_merge(target: Any, patch: Any) -> Any:
    """A practical subset of strategic merge patch: lists of objects that all carry a well-known merge key
    (``name``, ``mountPath``, ``containerPort``, ``type``...) are merged by that key (``$patch: delete``
    removes an element; ``$setElementOrder/<field>`` orders it); other lists are replaced; ``null``
    deletes; ``$patch: replace`` replaces a map; ``$retainKeys`` and ``$deleteFromPrimitiveList`` honoured."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k.startswith("$deleteFromPrimitiveList/"):
            key = k.split("/", 1)[1]
            out[key] = [x for x in out.get(key) or [] if x not in v]
        elif k.startswith("$") or k.startswith("$setElementOrder/"):
            continue
        elif v is None:
            out.pop(k, None)
        elif isinstance(v, list):
            out[k] = _merge_list(out.get(k), v, patch.get(f"$setElementOrder/{k}"))
        else:
            out[k] = strategic_merge(out.get(k), v)
    if "$retainKeys" in patch:
        keep = set(patch["$retainKeys"])
        out = {k: v for k, v in out.items() if k in keep}
    return out


def _merge_list(orig: Any, patch: list[Any], order: list[Any] | None) -> list[Any]:
    if not (patch and all(isinstance(x, dict) for x in patch) and isinstance(orig, list)
            and all(isinstance(x, dict) for x in orig)):
        return copy.deepcopy([x for x in patch if not (isinstance(x, dict) and x.get("$patch") == "delete")])
    key = next((mk for mk in _MERGE_KEYS if all(mk in x for x in patch)), None)
    if key is None:
        return copy.deepcopy(patch)
    result = {x.get(key): x for x in orig}
    for x in patch:
        if x.get("$patch") == "delete":
            result.pop(x[key], None)
        else:
            result[x[key]] = strategic_merge(result.get(x[key]), x)
    ordered = [result.pop(o[key]) for o in order or [] if isinstance(o, dict) and o.get(key) in result]
    return ordered + list(result.values())


def json_patch(target: Any, ops: list[Obj]) -> Any:
    """RFC 6902 JSON patch: add, remove, replace, move, copy, test."""
    doc = copy.deepcopy(target)

    def split(ptr: str) -> list[str]:
        return [p.replace("~1", "/").replace("~0", "~") for p in ptr.split("/")[1:]]

    def walk(d: Any, parts: list[str]) -> tuple[Any, str]:
        for p in parts[:-1]:
            d = d[int(p)] if isinstance(d, list) else d[p]
        return d, parts[-1]

    def get(ptr: str) -> Any:
        d = doc
        for p in split(ptr):
            d = d[int(p)] if isinstance(d, list) else d[p]
        return d

    def add(ptr: str, value: Any) -> None:
        parent, last = walk(doc, split(ptr))
        if isinstance(parent, list):
            parent.insert(len(parent) if last == "-" else int(last), value)
        else:
            parent[last] = value

    def remove(ptr: str) -> Any:
        parent, last = walk(doc, split(ptr))
        return parent.pop(int(last)) if isinstance(parent, list) else parent.pop(last)

    try:
        for op in ops:
            kind, path = op["op"], op["path"]
            if kind == "add":
                add(path, copy.deepcopy(op["value"]))
            elif kind == "remove":
                remove(path)
            elif kind == "replace":
                remove(path)
                add(path, copy.deepcopy(op["value"]))
            elif kind == "move":
                add(path, remove(op["from"]))
            elif kind == "copy":
                add(path, copy.deepcopy(get(op["from"])))
            elif kind == "test":
                if get(path) != op["value"]:
                    raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our "
                                   f"request: testing value {path} failed")
            else:
                raise bad_request(f"unknown json patch operation {kind!r}")
    except (KeyError, IndexError, ValueError, TypeError) as e:
        raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: "
                       f"{type(e).__name__}: {e}") from None
    return doc


# ----------------------------------------------------------------------------------------------------- store
@dataclass
class Event:
    rv: int
    group: str
    plural: str
    type: str  # ADDED / MODIFIED / DELETED
    obj: Obj
    old: Obj | None = None


@dataclass
class PodLog:
    data: bytearray = field(default_factory=bytearray)


Key = tuple[str, str, str, str]  # group, plural, namespace ("" if cluster-scoped), name


class Store:
    """Objects, the event log, pod logs and the resource registry."""

    def __init__(self, types: Iterable[ResourceType]) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)  # notified after every change (objects or logs)
        self.listeners: list[Callable[[], None]] = []  # called (under the lock) after every change
        self.types: dict[tuple[str, str, str], ResourceType] = {}
        self.objects: dict[Key, Obj] = {}
        self.events: list[Event] = []
        self.logs: dict[tuple[str, str, str], PodLog] = {}
        self.rv = 1000
        for t in types:
            self.register(t)

    # ----- registry
    def register(self, rt: ResourceType) -> None:
        with self.lock:
            self.types[(rt.group, rt.version, rt.plural)] = rt

    def all_types(self) -> list[ResourceType]:
        with self.lock:
            return list(self.types.values())

    def resource_type(self, group: str, version: str, plural: str) -> ResourceType:
        rt = self.types.get((group, version, plural))
        if rt is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource",
                           {"group": group, "kind": plural})
        return rt

    def type_for(self, api_version: str, kind: str) -> ResourceType:
        group, _, version = api_version.rpartition("/")
        for rt in self.all_types():
            if rt.group == group and rt.version == version and rt.kind == kind:
                return rt
        raise ApiError(404, "NotFound", f'no matches for kind "{kind}" in version "{api_version}"')

    def resolve(self, name: str) -> ResourceType:
        """'pods', 'pod', 'Pod', 'po', 'jobs.batch', 'batch/v1/jobs' -> the type (core group preferred)."""
        if name.count("/") == 2 or (name.count("/") == 1 and not name.startswith("/")):
            *gv, plural = name.split("/")
            group, version = (gv[0], gv[1]) if len(gv) == 2 else ("", gv[0])
            return self.resource_type(group, version, plural)
        base, _, group = name.partition(".")
        low = base.lower()
        hits = [rt for rt in self.all_types()
                if (not group or rt.group == group)
                and low in (rt.plural, rt.singular, rt.kind.lower(), *rt.short_names)]
        if not hits:
            raise KeyError(f"unknown resource {name!r}")
        hits.sort(key=lambda rt: (rt.group != "", rt.group.endswith("k8s.io")))
        return hits[0]

    # ----- helpers
    def _next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def _notify(self) -> None:
        self.changed.notify_all()
        for fn in list(self.listeners):
            fn()

    def _emit(self, rt: ResourceType, type_: str, obj: Obj, old: Obj | None = None) -> None:
        self.events.append(Event(int(obj["metadata"]["resourceVersion"]), rt.group, rt.plural, type_,
                                 copy.deepcopy(obj), old))
        self._notify()

    @staticmethod
    def _key(rt: ResourceType, namespace: str | None, name: str) -> Key:
        return (rt.group, rt.plural, (namespace or "") if rt.namespaced else "", name)

    def _out(self, rt: ResourceType, obj: Obj) -> Obj:
        out = copy.deepcopy(obj)
        out["apiVersion"], out["kind"] = rt.api_version, rt.kind
        return out

    def _check_namespace(self, rt: ResourceType, namespace: str | None) -> None:
        if not rt.namespaced:
            return
        if not namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent "
                              "on the request (none given)")
        ns = self.objects.get(("", "namespaces", "", namespace))
        if ns is None:
            raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found',
                           {"name": namespace, "kind": "namespaces"})
        if ns["metadata"].get("deletionTimestamp"):
            raise ApiError(403, "Forbidden", f'{rt.qualified} is forbidden: unable to create new content in '
                           f'namespace {namespace} because it is being terminated')

    # ----- reads
    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        with self.lock:
            obj = self.objects.get(self._key(rt, namespace, name))
            if obj is None:
                raise not_found(rt, name)
            return self._out(rt, obj)

    def list(self, rt: ResourceType, namespace: str | None, label_selector: str | None = None,
             field_selector: str | None = None) -> tuple[list[Obj], int]:
        match = selector_matcher(label_selector, field_selector)
        with self.lock:
            items = [self._out(rt, o) for (g, p, ns, _), o in sorted(self.objects.items())
                     if g == rt.group and p == rt.plural and (not namespace or not rt.namespaced
                                                               or ns == namespace)]
            return [o for o in items if match(o)], self.rv

    # ----- writes
    def create(self, rt: ResourceType, namespace: str | None, body: Obj, *, dry_run: bool = False,
               keep_status: bool = False) -> Obj:
        if not isinstance(body, dict):
            raise bad_request("the body of the request was in an unknown format")
        obj = copy.deepcopy(body)
        md = obj.setdefault("metadata", {})
        if not isinstance(md, dict):
            raise bad_request("metadata must be an object")
        with self.lock:
            if rt.namespaced:
                if namespace and md.get("namespace") and md["namespace"] != namespace:
                    raise bad_request("the namespace of the provided object does not match the namespace "
                                      "sent on the request")
                namespace = namespace or md.get("namespace")
                self._check_namespace(rt, namespace)
                md["namespace"] = namespace
            else:
                md.pop("namespace", None)
            if not md.get("name"):
                if not md.get("generateName"):
                    raise invalid(rt, "", "metadata.name: Required value: name or generateName is required")
                while True:
                    md["name"] = md["generateName"] + "".join(random.choices(GENERATE_CHARS, k=5))
                    if self._key(rt, namespace, md["name"]) not in self.objects:
                        break
            name = md["name"]
            if not NAME_RE.match(name) or len(name) > 253:
                raise invalid(rt, name, f'metadata.name: Invalid value: "{name}": a lowercase RFC 1123 '
                              "subdomain must consist of lower case alphanumeric characters, '-' or '.'")
            key = self._key(rt, namespace, name)
            if key in self.objects:
                raise ApiError(409, "AlreadyExists", f'{rt.qualified} "{name}" already exists',
                               {"name": name, "group": rt.group, "kind": rt.plural})
            md.pop("resourceVersion", None)
            md.update(uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339())
            self._defaults_on_create(rt, obj, keep_status)
            self._validate(rt, obj)
            md.pop("generation", None)
            if "spec" in obj:
                md["generation"] = 1
            for k in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
                md.pop(k, None)
            if dry_run:
                md["resourceVersion"] = str(self.rv)
                return self._out(rt, obj)
            md["resourceVersion"] = str(self._next_rv())
            obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
            self.objects[key] = obj
            self._emit(rt, "ADDED", obj)
            if rt.kind == "CustomResourceDefinition":
                self._register_crd(obj)
            return self._out(rt, obj)

    def _register_crd(self, crd: Obj) -> None:
        spec, names = crd.get("spec") or {}, (crd.get("spec") or {}).get("names") or {}
        for v in spec.get("versions") or []:
            if v.get("served", True):
                subs = frozenset((v.get("subresources") or {}).keys())
                self.register(ResourceType(spec["group"], v["name"], names["plural"], names["kind"],
                                           spec.get("scope", "Namespaced") == "Namespaced",
                                           names.get("singular", ""), short_names=tuple(names.get("shortNames", ())),
                                           categories=tuple(names.get("categories", ())), subresources=subs))

    def _defaults_on_create(self, rt: ResourceType, obj: Obj, keep_status: bool) -> None:
        if "status" in rt.subresources and not keep_status:  # status is owned by controllers
            obj["status"] = {}
            if rt.kind in ("Pod", "PersistentVolumeClaim"):
                obj["status"] = {"phase": "Pending"}
        if rt.kind == "Namespace":
            obj.setdefault("status", {}).setdefault("phase", "Active")
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        elif rt.kind == "Secret":
            obj.setdefault("type", "Opaque")
        elif rt.kind == "Job" and rt.group == "batch":
            uid = obj["metadata"]["uid"]
            spec = obj.setdefault("spec", {})
            for k, v in (("backoffLimit", 6), ("completions", 1), ("parallelism", 1), ("suspend", False)):
                spec.setdefault(k, v)
            labels = {"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name":
                      obj["metadata"]["name"], "controller-uid": uid, "job-name": obj["metadata"]["name"]}
            tmd = spec.setdefault("template", {}).setdefault("metadata", {})
            tmd["labels"] = {**(tmd.get("labels") or {}), **labels}
            spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
        elif rt.kind == "CronJob" and rt.group == "batch":
            spec = obj.setdefault("spec", {})
            for k, v in (("concurrencyPolicy", "Allow"), ("suspend", False), ("successfulJobsHistoryLimit", 3),
                         ("failedJobsHistoryLimit", 1)):
                spec.setdefault(k, v)
        self._fold_string_data(rt, obj)

    @staticmethod
    def _fold_string_data(rt: ResourceType, obj: Obj) -> None:
        if rt.kind == "Secret" and obj.get("stringData"):
            data = dict(obj.get("data") or {})
            for k, v in obj.pop("stringData").items():
                data[k] = base64.b64encode(str(v).encode()).decode()
            obj["data"] = data
        elif rt.kind == "Secret":
            obj.pop("stringData", None)

    def _validate(self, rt: ResourceType, obj: Obj) -> None:
        """A few checks the real apiserver does that manifests commonly get wrong."""
        name = obj["metadata"]["name"]
        if rt.kind == "Job" and rt.group == "batch":
            templates = [obj.get("spec", {}).get("template", {})]
        elif rt.kind == "CronJob" and rt.group == "batch":
            spec = obj.get("spec") or {}
            if not spec.get("schedule"):
                raise invalid(rt, name, "spec.schedule: Required value")
            templates = [((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}]
        else:
            templates = []
        for t in templates:
            pspec = t.get("spec") or {}
            if not pspec.get("containers"):
                raise invalid(rt, name, "spec.template.spec.containers: Required value")
            if pspec.get("restartPolicy") not in ("Never", "OnFailure"):
                raise invalid(rt, name, f'spec.template.spec.restartPolicy: Required value: valid values: '
                              f'"OnFailure", "Never" (got {pspec.get("restartPolicy")!r})')
        if rt.kind == "Pod" and not (obj.get("spec") or {}).get("containers"):
            raise invalid(rt, name, "spec.containers: Required value")

    def replace(self, rt: ResourceType, namespace: str | None, name: str, body: Obj, *,
                subresource: str | None = None, dry_run: bool = False) -> Obj:
        if not isinstance(body, dict):
            raise bad_request("the body of the request was in an unknown format")
        with self.lock:
            key = self._key(rt, namespace, name)
            cur = self.objects.get(key)
            if cur is None:
                raise not_found(rt, name)
            md = body.get("metadata") or {}
            if md.get("name", name) != name:
                raise bad_request("the name of the object does not match the name on the URL")
            want_rv = md.get("resourceVersion")
            if want_rv and want_rv != cur["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rt.qualified} "{name}": '
                               "the object has been modified; please apply your changes to the latest "
                               "version and try again", {"name": name, "group": rt.group, "kind": rt.plural})
            return self._commit(rt, key, cur, copy.deepcopy(body), subresource, dry_run)

    def patch(self, rt: ResourceType, namespace: str | None, name: str, patch: Any, patch_type: str, *,
              subresource: str | None = None, dry_run: bool = False) -> Obj:
        """patch_type: 'merge', 'strategic', 'json' or 'apply' (server-side apply: create or merge)."""
        with self.lock:
            key = self._key(rt, namespace, name)
            cur = self.objects.get(key)
            if cur is None:
                if patch_type == "apply" and subresource is None:
                    if not isinstance(patch, dict):
                        raise bad_request("apply patch must be an object")
                    md = patch.setdefault("metadata", {})
                    if md.get("name", name) != name:
                        raise bad_request("the name of the object does not match the name on the URL")
                    md["name"] = name
                    return self.create(rt, namespace, patch, dry_run=dry_run)
                raise not_found(rt, name)
            if patch_type == "json":
                if not isinstance(patch, list):
                    raise bad_request("json patch must be a list of operations")
                new = json_patch(cur, patch)
            elif not isinstance(patch, dict):
                raise bad_request("patch must be an object")
            elif patch_type == "merge":
                new = merge_patch(cur, patch)
            else:
                if patch_type == "apply" and (patch.get("metadata") or {}).get("name", name) != name:
                    raise bad_request("the name of the object does not match the name on the URL")
                new = strategic_merge(cur, patch)
            return self._commit(rt, key, cur, new, subresource, dry_run)

    def _commit(self, rt: ResourceType, key: Key, cur: Obj, new: Obj, subresource: str | None,
                dry_run: bool) -> Obj:
        new = copy.deepcopy(new)  # merges share untouched subtrees with ``cur``
        if subresource == "status":  # only status changes
            status = new.get("status")
            new = copy.deepcopy(cur)
            new["status"] = status if status is not None else {}
        elif subresource is not None:
            raise ApiError(404, "NotFound", f"subresource {subresource!r} is not supported by this fake")
        elif "status" in rt.subresources:  # main resource updates ignore status
            new["status"] = copy.deepcopy(cur.get("status", {}))
        md, cmd = new.setdefault("metadata", {}), cur["metadata"]
        for k in ("uid", "creationTimestamp", "namespace", "name", "generation", "deletionTimestamp"):
            if k in cmd:
                md[k] = cmd[k]
            else:
                md.pop(k, None)
        md["resourceVersion"] = cmd["resourceVersion"]  # (a stale one was refused by replace())
        self._fold_string_data(rt, new)
        new["apiVersion"], new["kind"] = rt.api_version, rt.kind
        if new == cur:
            return self._out(rt, cur)  # no-op: no new resourceVersion, no event (as the real API)
        if new.get("spec") != cur.get("spec"):
            md["generation"] = int(cmd.get("generation", 1)) + 1
        self._validate(rt, new)
        if dry_run:
            return self._out(rt, new)
        md["resourceVersion"] = str(self._next_rv())
        self.objects[key] = new
        self._emit(rt, "MODIFIED", new, cur)
        if md.get("deletionTimestamp") and not md.get("finalizers"):
            self._remove(rt, key)
        return self._out(rt, new)

    def delete(self, rt: ResourceType, namespace: str | None, name: str, *, propagation: str | None = None,
               dry_run: bool = False, precondition_uid: str | None = None) -> Obj:
        with self.lock:
            key = self._key(rt, namespace, name)
            cur = self.objects.get(key)
            if cur is None:
                raise not_found(rt, name)
            if precondition_uid and precondition_uid != cur["metadata"]["uid"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rt.qualified} "{name}": '
                               "Precondition failed: UID in precondition does not match the object")
            if dry_run:
                return self._out(rt, cur)
            if propagation is None:  # batch/v1 Jobs orphan their pods unless asked (a well-known trap)
                propagation = "Orphan" if rt.kind == "Job" else "Background"
            if cur["metadata"].get("finalizers"):
                if not cur["metadata"].get("deletionTimestamp"):
                    new = copy.deepcopy(cur)
                    new["metadata"].update(deletionTimestamp=now_rfc3339(), deletionGracePeriodSeconds=0,
                                           resourceVersion=str(self._next_rv()))
                    self.objects[key] = new
                    self._emit(rt, "MODIFIED", new, cur)
                return self._out(rt, self.objects[key])
            gone = self._remove(rt, key)
            if propagation != "Orphan":
                self._collect_garbage(gone["metadata"]["uid"])
            if rt.kind == "Namespace":
                for k in [k for k in self.objects if k[2] == name and k[0:2] != ("", "namespaces")]:
                    self._remove(self._type_of_key(k), k)
            return gone

    def _remove(self, rt: ResourceType, key: Key) -> Obj:
        obj = self.objects.pop(key)
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = str(self._next_rv())
        self._emit(rt, "DELETED", gone, obj)
        if rt.kind == "Pod":
            for lk in [lk for lk in self.logs if lk[:2] == (key[2], key[3])]:
                del self.logs[lk]
        return self._out(rt, gone)

    def _type_of_key(self, key: Key) -> ResourceType:
        return next(rt for rt in self.all_types() if (rt.group, rt.plural) == key[:2])

    def _collect_garbage(self, owner_uid: str) -> None:
        for key, obj in list(self.objects.items()):
            if key in self.objects and any(r.get("uid") == owner_uid
                                           for r in obj["metadata"].get("ownerReferences") or []):
                child = self._remove(self._type_of_key(key), key)
                self._collect_garbage(child["metadata"]["uid"])

    def delete_collection(self, rt: ResourceType, namespace: str | None, label_selector: str | None,
                          field_selector: str | None, propagation: str | None = None) -> list[Obj]:
        with self.lock:
            items, _ = self.list(rt, namespace, label_selector, field_selector)
            return [self.delete(rt, o["metadata"].get("namespace"), o["metadata"]["name"],
                                propagation=propagation) for o in items]

    # ----- watch support
    def watch_start(self, rt: ResourceType, namespace: str | None, resource_version: str | None,
                    match: Callable[[Obj], bool]) -> tuple[list[Obj], int]:
        """-> (synthetic ADDED objects, index into the event log to follow from)."""
        with self.lock:
            if resource_version in (None, "", "0"):
                items = [o for o in self.list(rt, namespace)[0] if match(o)]
                return items, len(self.events)
            try:
                rv = int(resource_version)
            except ValueError:
                raise bad_request(f"invalid resourceVersion {resource_version!r}") from None
            if self.events and rv < self.events[0].rv - 1:
                raise ApiError(410, "Expired", f"too old resource version: {rv} ({self.events[0].rv})")
            idx = len(self.events)
            while idx > 0 and self.events[idx - 1].rv > rv:
                idx -= 1
            return [], idx

    def events_since(self, index: int) -> tuple[list[Event], int]:
        with self.lock:
            return self.events[index:], len(self.events)

    # ----- pod logs
    def append_log(self, namespace: str, pod: str, data: bytes, container: str = "") -> None:
        with self.lock:
            self.logs.setdefault((namespace, pod, container), PodLog()).data.extend(data)
            self._notify()

    def set_log(self, namespace: str, pod: str, data: bytes, container: str = "") -> None:
        with self.lock:
            self.logs[(namespace, pod, container)] = PodLog(bytearray(data))
            self._notify()

    def read_log(self, namespace: str, pod: str, container: str = "") -> bytes | None:
        with self.lock:
            log = self.logs.get((namespace, pod, container)) or self.logs.get((namespace, pod, ""))
            if log is None and not container:  # no container named: the first one that has a log
                log = next((v for k, v in self.logs.items() if k[:2] == (namespace, pod)), None)
            return bytes(log.data) if log is not None else None
