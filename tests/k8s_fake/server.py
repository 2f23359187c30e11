"""A fake Kubernetes API server speaking real HTTP (JSON), for the `kubernetes` client and `kubectl`.

kmock's ``KubernetesEmulator`` is subclassed as the aiohttp handler; Kubernetes API paths are answered by
:class:`_Api` with the semantics in :class:`~.store.Store`, anything else falls through to kmock.
``FakeKubeServer`` runs it on 127.0.0.1 (a port below 32768) in a background thread with its own loop.

Served: discovery (legacy, non-aggregated), CRUD + list (limit/continue) and watch with label/field
selectors, PUT/PATCH (merge, strategic, json, server-side apply), DELETE (+ finalizers, owner-reference
garbage collection, deletecollection), dryRun, the ``status`` subresource, ``pods/log`` (+ follow) and
websocket ``pods/exec`` (v5/v4.channel.k8s.io). Protobuf request bodies (kubectl's typed clients) are
decoded with schemas read from the kubectl binary. OpenAPI v3 is a stub without schemas, so unknown fields
are not rejected. Not served: CBOR bodies (415), Table output (kubectl prints NAME/AGE only), authn/authz
(any token is accepted), admission webhooks, scheduling, SPDY exec, port-forward, attach, proxy.

Run standalone:  python -m k8s_fake [--port N]   (from tests/; Ctrl-C stops)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import random
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import aiohttp.web
import attrs
import kmock
import yaml

from . import protobuf
from .localrun import ExecResult, LocalExec
from .store import (
    MONITORING,
    ApiError,
    Obj,
    ResourceType,
    Store,
    bad_request,
    bundled_resource_types,
    now_rfc3339,
    selector_matcher,
)

ExecHandler = Callable[[str, str, str, list[str], bytes | None], ExecResult]
# a reactor sees (method, path, query, body) first and may answer with (HTTP status, JSON body)
Reactor = Callable[[str, str, Mapping[str, str], bytes], tuple[int, Any] | None]
T = TypeVar("T")

STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
FRAME = 32 * 1024
MAX_STREAM_SECONDS = 1800.0  # server-side cap for watches and followed logs
# kinds whose DELETE answers with the object (as the real API's OpenAPI says); the rest answer a Status
RETURNS_DELETED_OBJECT = frozenset({
    "Pod", "PersistentVolumeClaim", "PersistentVolume", "PodTemplate", "ResourceQuota", "Service",
    "ServiceAccount", "CSIDriver", "CSINode", "StorageClass", "VolumeAttachment", "VolumeAttributesClass",
    "DeviceClass", "ResourceClaim", "ResourceClaimTemplate", "ResourceSlice"})
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


@dataclass
class ExecCall:
    namespace: str
    pod: str
    container: str
    command: list[str]
    stdin: bytes | None
    exit_code: int | None = None


def _json(body: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.Response(body=json.dumps(body).encode(), status=status, content_type="application/json")


def _truthy(v: str | None) -> bool:
    return (v or "").lower() in ("true", "1")


@attrs.define(kw_only=True)
class KubeApiEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with every Kubernetes API path answered by :class:`_Api` before kmock parses the
    request (kmock 0.8's path parser fails on e.g. ``/api/v1/namespaces``); anything _Api declines goes to
    kmock (its DSL reactions and error rendering)."""

    api: _Api | None = None

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if self.api is not None:
            resp = await self.api.handle(raw_request)
            if resp is not None:
                return resp
        return await super().__call__(raw_request)


class _Api:
    """Routes one HTTP request to the store (runs on the server's event loop)."""

    def __init__(self, fake: FakeKubeServer) -> None:
        self.fake, self.store = fake, fake.store
        self.stopping = False
        self.wake = asyncio.Event()
        self.loop = asyncio.get_running_loop()

    def notify(self) -> None:  # called by the store (any thread) after each change
        self.loop.call_soon_threadsafe(self._wakeup)

    def _wakeup(self) -> None:
        self.wake.set()
        self.wake = asyncio.Event()

    async def handle(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse | None:
        path, method, query = raw.path, raw.method.upper(), raw.query
        body = await raw.read()
        self.fake.request_log.append(f"{method} {raw.rel_url.path_qs}")
        for reactor in list(self.fake.reactors):
            hit = reactor(method, path, dict(query), body)
            if hit is not None:
                return _json(hit[1], hit[0])
        try:
            return await self._route(raw, body, method, path, query)
        except ApiError as e:
            return _json(e.status(), e.code)
        except Exception as e:  # a bug in the fake: answer like the apiserver would, with details
            err = ApiError(500, "InternalError", f"fake API server error: {type(e).__name__}: {e}",
                           {"causes": [{"message": traceback.format_exc()}]})
            return _json(err.status(), 500)

    async def _route(self, raw: aiohttp.web.BaseRequest, body: bytes, method: str, path: str,
                     query: Any) -> aiohttp.web.StreamResponse | None:
        parts = [p for p in path.split("/") if p]
        if path in ("/healthz", "/livez", "/readyz"):
            return aiohttp.web.Response(text="ok")
        if path == "/version":
            major, minor = self.fake.git_version.lstrip("v").split(".")[:2]
            return _json({"major": major, "minor": minor, "gitVersion": self.fake.git_version,
                          "platform": "linux/amd64", "goVersion": "go1.24", "compiler": "gc"})
        if path == "/api":
            return _json({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.fake.host}:{self.fake.port}"}]})
        if path == "/apis":
            return _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": self._groups()})
        if parts[:2] == ["openapi", "v3"]:
            return self._openapi_v3("/".join(parts[2:]))
        if not parts or parts[0] not in ("api", "apis"):
            return None
        if parts[0] == "api" and len(parts) == 2:
            return self._resource_list("", parts[1])
        if parts[0] == "apis" and len(parts) == 2:
            grp = next((g for g in self._groups() if g["name"] == parts[1]), None)
            if grp is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return _json({"kind": "APIGroup", "apiVersion": "v1", **grp})
        if parts[0] == "apis" and len(parts) == 3:
            return self._resource_list(parts[1], parts[2])
        group, version, rest = ("", parts[1], parts[2:]) if parts[0] == "api" else (parts[1], parts[2], parts[3:])
        watch = _truthy(query.get("watch"))
        if rest and rest[0] == "watch":
            watch, rest = True, rest[1:]
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        if not rest:
            return None
        rt = self.store.resource_type(group, version, rest[0])
        name = rest[1] if len(rest) > 1 else None
        sub = "/".join(rest[2:]) or None
        if (rt.namespaced and namespace is None and name is not None) or (not rt.namespaced and namespace):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return await self._resource(raw, body, method, query, rt, namespace, name, sub, watch)

    # ----------------------------------------------------------------------------------------- discovery
    def _groups(self) -> list[Obj]:
        versions: dict[str, list[str]] = {}
        for rt in self.store.all_types():
            if rt.group and rt.version not in versions.setdefault(rt.group, []):
                versions[rt.group].append(rt.version)
        return [{"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                 "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}}
                for g, vs in versions.items()]

    def _resource_list(self, group: str, version: str) -> aiohttp.web.Response:
        types = [rt for rt in self.store.all_types() if (rt.group, rt.version) == (group, version)]
        if not types:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        gv = f"{group}/{version}" if group else version
        return _json({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                      "resources": [e for rt in types for e in rt.discovery()]})

    def _openapi_v3(self, gv_path: str) -> aiohttp.web.Response:
        """Just enough OpenAPI v3 for kubectl to see that every PATCH takes ``fieldValidation`` (so it lets
        the server validate instead of downloading schemas). No schemas: the fake does not validate fields."""
        gvs = {(rt.group, rt.version) for rt in self.store.all_types()}
        paths = {("apis/" + g if g else "api") + "/" + v: (g, v) for g, v in gvs}
        if not gv_path:
            return _json({"paths": {p: {"serverRelativeURL": f"/openapi/v3/{p}?hash=fake{self.store.rv}"}
                                    for p in sorted(paths)}})
        if gv_path not in paths:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        group, version = paths[gv_path]
        ops: Obj = {}
        for rt in self.store.all_types():
            if (rt.group, rt.version) != (group, version):
                continue
            ns = "/namespaces/{namespace}" if rt.namespaced else ""
            ops[f"/{gv_path}{ns}/{rt.plural}/{{name}}"] = {"patch": {
                "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": rt.kind},
                "parameters": [{"name": n, "in": "query", "schema": {"type": "string"}}
                               for n in ("dryRun", "fieldManager", "fieldValidation", "force")],
                "responses": {"200": {"description": "OK"}}}}
        return _json({"openapi": "3.0.0", "info": {"title": "Kubernetes (fake)", "version": self.fake.git_version},
                      "paths": ops, "components": {"schemas": {}}})

    # ----------------------------------------------------------------------------------------- resources
    def _parse_body(self, body: bytes, content_type: str) -> Any:
        if "protobuf" in content_type:
            try:
                return protobuf.decode(body, self.fake.kubectl)
            except protobuf.ProtobufUnsupported as e:
                raise ApiError(415, "UnsupportedMediaType", str(e)) from None
        if "cbor" in content_type:
            raise ApiError(415, "UnsupportedMediaType", "the fake API server does not accept CBOR")
        if not body.strip():
            return None
        try:
            return yaml.safe_load(body) if "yaml" in content_type else json.loads(body)
        except ValueError as e:
            raise bad_request(f"the body of the request could not be decoded: {e}") from None

    async def _resource(self, raw: aiohttp.web.BaseRequest, body: bytes, method: str, query: Any,
                        rt: ResourceType, namespace: str | None, name: str | None, sub: str | None,
                        watch: bool) -> aiohttp.web.StreamResponse:
        st, ctype = self.store, raw.headers.get("Content-Type", "application/json").lower()
        dry_run = query.get("dryRun") == "All"
        if sub == "exec" and rt.kind == "Pod" and name:
            return await self._exec(raw, namespace or "", name, query)
        if sub == "log" and rt.kind == "Pod" and name:
            return await self._log(raw, rt, namespace or "", name, query)
        if sub not in (None, "status"):
            raise ApiError(404, "NotFound", f"the fake does not serve the {sub!r} subresource")
        if method == "GET" and watch:
            fs = query.get("fieldSelector") or ""
            if name:
                fs = ",".join(x for x in (fs, f"metadata.name={name}") if x)
            return await self._watch(raw, rt, namespace, query.get("labelSelector"), fs,
                                     query.get("resourceVersion"), query.get("timeoutSeconds"))
        if method == "GET" and name:
            return _json(st.get(rt, namespace, name))
        if method == "GET":
            return _json(self._list(rt, namespace, query))
        if method == "POST" and not name:
            obj = self._parse_body(body, ctype)
            return _json(st.create(rt, namespace, obj, dry_run=dry_run), 201)
        if method == "PUT" and name:
            obj = self._parse_body(body, ctype)
            return _json(st.replace(rt, namespace, name, obj, subresource=sub, dry_run=dry_run))
        if method == "PATCH" and name:
            kinds = {"application/merge-patch+json": "merge", "application/strategic-merge-patch+json":
                     "strategic", "application/json-patch+json": "json", "application/apply-patch+yaml": "apply"}
            ptype = kinds.get(ctype.split(";")[0].strip())
            if ptype is None:
                raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown "
                               f"format - accepted media types include: {', '.join(kinds)}")
            obj = self._parse_body(body, "yaml" if ptype == "apply" else "json")
            existed = self._exists(rt, namespace, name)
            out = st.patch(rt, namespace, name, obj, ptype, subresource=sub, dry_run=dry_run)
            return _json(out, 200 if existed or ptype != "apply" else 201)
        if method == "DELETE":
            opts = self._parse_body(body, ctype) or {}
            propagation = query.get("propagationPolicy") or opts.get("propagationPolicy")
            if opts.get("orphanDependents") is True:
                propagation = "Orphan"
            dry_run = dry_run or opts.get("dryRun") == ["All"]
            if not name:
                items = st.delete_collection(rt, namespace, query.get("labelSelector"),
                                             query.get("fieldSelector"), propagation)
                return _json({"kind": rt.kind + "List", "apiVersion": rt.api_version,
                              "metadata": {"resourceVersion": str(st.rv)}, "items": items})
            uid = (opts.get("preconditions") or {}).get("uid")
            out = st.delete(rt, namespace, name, propagation=propagation, dry_run=dry_run, precondition_uid=uid)
            if out["metadata"].get("deletionTimestamp") or rt.kind in RETURNS_DELETED_OBJECT:
                return _json(out)  # still there (finalizers) or a kind whose deletion returns the object
            return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                          "details": {"name": name, "group": rt.group, "kind": rt.plural,
                                      "uid": out["metadata"]["uid"]}})
        raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested "
                       f"resource ({method})")

    def _exists(self, rt: ResourceType, namespace: str | None, name: str) -> bool:
        try:
            self.store.get(rt, namespace, name)
        except ApiError:
            return False
        return True

    def _list(self, rt: ResourceType, namespace: str | None, query: Any) -> Obj:
        items, rv = self.store.list(rt, namespace, query.get("labelSelector"), query.get("fieldSelector"))
        for o in items:  # the real API leaves kind/apiVersion out of list items
            o.pop("kind", None)
            o.pop("apiVersion", None)
        meta: Obj = {"resourceVersion": str(rv)}
        if token := query.get("continue"):
            try:
                after = tuple(json.loads(base64.b64decode(token)))
            except ValueError:
                raise ApiError(400, "BadRequest", "invalid continue token") from None
            items = [o for o in items if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > after]
        limit = int(query.get("limit") or 0)
        if limit and len(items) > limit:
            last = items[limit - 1]["metadata"]
            meta["continue"] = base64.b64encode(json.dumps([last.get("namespace", ""), last["name"]])
                                                .encode()).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        return {"kind": rt.kind + "List", "apiVersion": rt.api_version, "metadata": meta, "items": items}

    # ----------------------------------------------------------------------------------------- streaming
    def _gone(self, raw: aiohttp.web.BaseRequest) -> bool:
        return self.stopping or raw.transport is None or raw.transport.is_closing()

    async def _sleep_until_change(self, wake: asyncio.Event, deadline: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), max(0.0, min(1.0, deadline - self.loop.time())))

    async def _watch(self, raw: aiohttp.web.BaseRequest, rt: ResourceType, namespace: str | None,
                     label_selector: str | None, field_selector: str | None, resource_version: str | None,
                     timeout_seconds: str | None) -> aiohttp.web.StreamResponse:
        matcher = selector_matcher(label_selector, field_selector)

        def match(o: Obj | None) -> bool:
            if o is None or (namespace and rt.namespaced and o["metadata"].get("namespace") != namespace):
                return False
            return matcher(o)

        initial, idx = self.store.watch_start(rt, namespace, resource_version, match)
        resp = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(raw)
        deadline = self.loop.time() + min(float(timeout_seconds or MAX_STREAM_SECONDS), MAX_STREAM_SECONDS)

        async def send(type_: str, obj: Obj) -> None:
            out = copy.deepcopy(obj)
            out["apiVersion"], out["kind"] = rt.api_version, rt.kind
            await resp.write(json.dumps({"type": type_, "object": out}).encode() + b"\n")

        try:
            for obj in initial:
                await send("ADDED", obj)
            while not self._gone(raw) and self.loop.time() < deadline:
                wake = self.wake
                events, idx = self.store.events_since(idx)
                for ev in events:
                    if (ev.group, ev.plural) != (rt.group, rt.plural):
                        continue
                    now_m, old_m = match(ev.obj), match(ev.old)
                    if ev.type == "MODIFIED" and now_m != old_m:
                        await send("ADDED" if now_m else "DELETED", ev.obj)
                    elif now_m or (ev.type == "DELETED" and old_m):
                        await send(ev.type, ev.obj)
                await self._sleep_until_change(wake, deadline)
        except (ConnectionError, RuntimeError):
            pass  # client went away
        return resp

    async def _log(self, raw: aiohttp.web.BaseRequest, rt: ResourceType, namespace: str, name: str,
                   query: Any) -> aiohttp.web.StreamResponse:
        pod = self.store.get(rt, namespace, name)
        containers = [c["name"] for key in ("containers", "initContainers")
                      for c in (pod.get("spec") or {}).get(key) or []]
        container = query.get("container") or (containers[0] if containers else "")
        if containers and container not in containers:
            raise bad_request(f"container {container} is not valid for pod {name}")
        data = self.store.read_log(namespace, name, container)
        if data is None and (pod.get("status") or {}).get("phase", "Pending") == "Pending":
            raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating')
        data = data or b""
        if query.get("tailLines") is not None:
            n = int(query["tailLines"])
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-n:]) if n > 0 else b""
        if query.get("limitBytes"):
            data = data[: int(query["limitBytes"])]
        if not _truthy(query.get("follow")):
            return aiohttp.web.Response(body=data, content_type="text/plain")
        resp = aiohttp.web.StreamResponse(headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(raw)
        sent = len(self.store.read_log(namespace, name, container) or b"")
        deadline = self.loop.time() + MAX_STREAM_SECONDS
        try:
            if data:
                await resp.write(data)
            while not self._gone(raw) and self.loop.time() < deadline:
                wake = self.wake
                cur = self.store.read_log(namespace, name, container) or b""
                if len(cur) > sent:
                    await resp.write(cur[sent:])
                    sent = len(cur)
                try:
                    phase = (self.store.get(rt, namespace, name).get("status") or {}).get("phase")
                except ApiError:
                    break  # pod deleted
                if phase in ("Succeeded", "Failed") and len(self.store.read_log(namespace, name, container)
                                                             or b"") == sent:
                    break
                await self._sleep_until_change(wake, deadline)
        except (ConnectionError, RuntimeError):
            pass
        return resp

    async def _exec(self, raw: aiohttp.web.BaseRequest, namespace: str, name: str,
                    query: Any) -> aiohttp.web.StreamResponse:
        rt = self.store.resolve("pods")
        pod = self.store.get(rt, namespace, name)
        containers = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
        container = query.get("container") or (containers[0] if containers else "")
        if container not in containers:
            raise bad_request(f"container {container} is not valid for pod {name}")
        phase = (pod.get("status") or {}).get("phase", "Pending")
        if phase in ("Succeeded", "Failed"):
            raise bad_request(f"cannot exec into a container in a completed pod; current phase is {phase}")
        if self.fake.exec_requires_running and phase != "Running":
            raise bad_request(f'unable to upgrade connection: container not found ("{container}")')
        command = query.getall("command", [])
        if not command:
            raise bad_request("you must specify at least 1 command")
        if raw.headers.get("Upgrade", "").lower() != "websocket":
            raise ApiError(400, "BadRequest", "the fake serves exec over websocket only (no SPDY)")
        ws = aiohttp.web.WebSocketResponse(protocols=("v5.channel.k8s.io", "v4.channel.k8s.io"),
                                           max_msg_size=0)
        await ws.prepare(raw)
        v5 = ws.ws_protocol == "v5.channel.k8s.io"
        stdin: bytes | None = None
        if _truthy(query.get("stdin")):
            stdin = await self._read_stdin(ws, v5)
        handler = self.fake.exec_handler_for(namespace, name)
        call = ExecCall(namespace, name, container, list(command), stdin)
        self.fake.exec_calls.append(call)
        try:
            code, out, err = await asyncio.to_thread(handler, namespace, name, container, list(command), stdin)
        except Exception as e:  # a broken handler is a test bug: show it as the command's stderr
            code, out, err = 1, b"", f"exec handler failed: {type(e).__name__}: {e}\n".encode()
        call.exit_code = code
        tty = _truthy(query.get("tty"))
        try:
            if _truthy(query.get("stdout", "true")):
                for i in range(0, len(out), FRAME):
                    await ws.send_bytes(bytes([STDOUT]) + out[i:i + FRAME])
            if _truthy(query.get("stderr")) or tty:
                for i in range(0, len(err), FRAME):
                    await ws.send_bytes(bytes([STDOUT if tty else STDERR]) + err[i:i + FRAME])
            status: Obj = {"metadata": {}, "status": "Success"}
            if code:
                status = {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                          "message": f"command terminated with non-zero exit code: error executing command "
                                     f"{command}, exit code {code}",
                          "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}
            await ws.send_bytes(bytes([ERROR]) + json.dumps(status).encode())
            await ws.close()
        except (ConnectionError, RuntimeError):
            pass
        return ws

    async def _read_stdin(self, ws: aiohttp.web.WebSocketResponse, v5: bool) -> bytes:
        """Collect stdin until EOF: v5 sends a close frame for channel 0; v4 cannot signal EOF, so there
        stdin ends when the client closes or after a quiet second (documented limitation)."""
        data = bytearray()
        deadline = self.loop.time() + self.fake.exec_stdin_timeout
        while not self.stopping:
            left = deadline - self.loop.time()
            if left <= 0:
                break
            try:
                msg = await ws.receive(timeout=left if v5 else min(1.0, left))
            except TimeoutError:
                break
            if msg.type == aiohttp.WSMsgType.BINARY:
                frame = bytes(msg.data)
            elif msg.type == aiohttp.WSMsgType.TEXT:
                frame = bytes([ord(msg.data[0]) & 0xFF]) + msg.data[1:].encode() if msg.data else b""
            else:
                break  # closed
            if not frame:
                continue
            if frame[0] == CLOSE and v5:
                if frame[1:2] == bytes([STDIN]):
                    break
            elif frame[0] == STDIN:
                data.extend(frame[1:])
        return bytes(data)


class FakeKubeServer:
    """The fake API server in a background thread.

    >>> with FakeKubeServer() as kube:          # doctest: +SKIP
    ...     path = write_kubeconfig(tmp / "kubeconfig", kube.url)
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None,
                 namespaces: Iterable[str] = DEFAULT_NAMESPACES, monitoring: bool = True,
                 exec_handler: ExecHandler | None = None, exec_requires_running: bool = True,
                 exec_stdin_timeout: float = 30.0, git_version: str = "v1.33.0",
                 kubectl: str | None = None) -> None:
        self.host, self._port = host, port
        self.kubectl = kubectl  # protobuf schemas are read from this binary (default: protobuf.find_kubectl())
        self.git_version = git_version
        self.store = Store([*bundled_resource_types(), *(MONITORING if monitoring else [])])
        self.exec_handler: ExecHandler = exec_handler or LocalExec()
        self.exec_requires_running = exec_requires_running
        self.exec_stdin_timeout = exec_stdin_timeout
        self.exec_calls: list[ExecCall] = []
        self.reactors: list[Reactor] = []
        self.request_log: list[str] = []
        self._exec_handlers: dict[tuple[str | None, str | None], ExecHandler] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._emulator: KubeApiEmulator | None = None
        self._api: _Api | None = None
        for ns in namespaces:
            self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

    # --------------------------------------------------------------------------------------- lifecycle
    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> FakeKubeServer:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="fake-kube-api",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"fake API server did not start within {timeout}s")
        if self._error is not None:
            raise RuntimeError(f"fake API server failed to start: {self._error!r}") from self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stop_event is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._stop_event.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"fake API server did not stop within {timeout}s")
        self._thread = None

    def __enter__(self) -> FakeKubeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _main(self) -> None:
        self._loop, self._stop_event = asyncio.get_running_loop(), asyncio.Event()
        runner: aiohttp.web.ServerRunner | None = None
        try:
            self._api = _Api(self)
            self.store.listeners.append(self._api.notify)
            self._emulator = KubeApiEmulator(api=self._api)
            await self._emulator.__aenter__()
            runner = aiohttp.web.ServerRunner(aiohttp.web.Server(self._emulator), shutdown_timeout=1.0)
            await runner.setup()
            ports = [self._port] if self._port else random.sample(range(20000, 32000), 40)
            for i, port in enumerate(ports):
                try:
                    await aiohttp.web.TCPSite(runner, self.host, port, reuse_address=False).start()
                except OSError:
                    if i == len(ports) - 1:
                        raise
                    continue
                self._port = port
                break
        except BaseException as e:
            self._error = e
            self._ready.set()
            if runner is not None:
                await runner.cleanup()
            return
        self._ready.set()
        await self._stop_event.wait()
        self._api.stopping = True
        self._api._wakeup()
        self.store.listeners.remove(self._api.notify)
        await asyncio.sleep(0.05)  # let streams notice
        await runner.cleanup()
        await self._emulator.__aexit__(None, None, None)

    # ---------------------------------------------------------------------------------- test-side helpers
    @property
    def requests(self) -> list[str]:
        """Requests served so far, as 'METHOD /path?query'."""
        return list(self.request_log)

    def add_reactor(self, reactor: Reactor) -> None:
        """Answer matching requests yourself, e.g. to inject a 500: ``lambda m, p, q, b: (500, {...}) if
        m == "POST" and p.endswith("/jobs") else None``."""
        self.reactors.append(reactor)

    def set_exec_handler(self, handler: ExecHandler, *, namespace: str | None = None,
                         pod: str | None = None) -> None:
        """Handler for exec into ``pod`` (in ``namespace``); with neither, the default for all pods."""
        if namespace is None and pod is None:
            self.exec_handler = handler
        else:
            self._exec_handlers[(namespace, pod)] = handler

    def exec_handler_for(self, namespace: str, pod: str) -> ExecHandler:
        for key in ((namespace, pod), (None, pod), (namespace, None)):
            if key in self._exec_handlers:
                return self._exec_handlers[key]
        return self.exec_handler

    def resource(self, name: str) -> ResourceType:
        return self.store.resolve(name)

    def register_resource(self, rt: ResourceType) -> None:
        self.store.register(rt)

    def get(self, resource: str, name: str, namespace: str | None = "default") -> Obj | None:
        try:
            return self.store.get(self.resource(resource), namespace, name)
        except ApiError:
            return None

    def list(self, resource: str, namespace: str | None = None, label_selector: str | None = None,
             field_selector: str | None = None) -> list[Obj]:
        return self.store.list(self.resource(resource), namespace, label_selector, field_selector)[0]

    def create(self, obj: Obj, *, namespace: str | None = None, keep_status: bool = False) -> Obj:
        """Create like a POST would (defaults, validation, events); ``keep_status`` keeps a given status."""
        rt = self.store.type_for(obj.get("apiVersion", ""), obj.get("kind", ""))
        if rt.namespaced:
            namespace = namespace or (obj.get("metadata") or {}).get("namespace") or "default"
        return self.store.create(rt, namespace, obj, keep_status=keep_status)

    def apply(self, obj: Obj, *, namespace: str | None = None) -> Obj:
        """Create or (strategic-)merge, like server-side apply."""
        rt = self.store.type_for(obj.get("apiVersion", ""), obj.get("kind", ""))
        if rt.namespaced:
            namespace = namespace or (obj.get("metadata") or {}).get("namespace") or "default"
        return self.store.patch(rt, namespace, obj["metadata"]["name"], copy.deepcopy(obj), "apply")

    def patch(self, resource: str, name: str, patch: Obj, namespace: str | None = "default", *,
              subresource: str | None = None) -> Obj:
        return self.store.patch(self.resource(resource), namespace, name, patch, "merge", subresource=subresource)

    def set_status(self, resource: str, name: str, status: Obj, namespace: str | None = "default") -> Obj:
        """Merge ``status`` into the object's status (through the status subresource)."""
        return self.patch(resource, name, {"status": status}, namespace, subresource="status")

    def delete(self, resource: str, name: str, namespace: str | None = "default", *,
               propagation: str | None = None) -> Obj:
        return self.store.delete(self.resource(resource), namespace, name, propagation=propagation)

    def add_pod(self, name: str, namespace: str = "default", *, labels: Mapping[str, str] | None = None,
                containers: Iterable[str] = ("main",), phase: str = "Running", image: str = "fake:latest",
                node_name: str = "fake-node") -> Obj:
        """A pod in the given phase (Running by default, so it can be exec'ed into)."""
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
               "spec": {"nodeName": node_name, "containers": [{"name": c, "image": image} for c in containers]}}
        self.create(pod)
        started = now_rfc3339()
        return self.set_status("pods", name, {
            "phase": phase, "podIP": "10.244.0.10", "hostIP": "10.0.0.1", "startTime": started,
            "conditions": [{"type": "Ready", "status": "True" if phase == "Running" else "False"}],
            "containerStatuses": [{"name": c, "image": image, "ready": phase == "Running", "restartCount": 0,
                                   "state": {"running": {"startedAt": started}} if phase == "Running" else {}}
                                  for c in containers]}, namespace)

    def set_pod_log(self, name: str, data: bytes | str, namespace: str = "default", container: str = "") -> None:
        self.store.set_log(namespace, name, data.encode() if isinstance(data, str) else data, container)

    def append_pod_log(self, name: str, data: bytes | str, namespace: str = "default",
                       container: str = "") -> None:
        self.store.append_log(namespace, name, data.encode() if isinstance(data, str) else data, container)

    def pod_log(self, name: str, namespace: str = "default", container: str = "") -> bytes | None:
        return self.store.read_log(namespace, name, container)

    def wait_for(self, predicate: Callable[[], T], timeout: float = 10.0) -> T:
        """Wait (bounded) until ``predicate()`` is truthy, re-checking after each change; returns it."""
        deadline = time.monotonic() + timeout
        with self.store.changed:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"condition not met within {timeout}s")
                self.store.changed.wait(min(left, 0.5))


def main() -> None:
    import argparse
    import signal

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=None)
    args = ap.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with FakeKubeServer(port=args.port) as kube:
        print(f"fake kube-apiserver at {kube.url}", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
