"""Kubernetes API access for the plugin: one client from --kubeconfig/--context (kubeconfig files resolved
exactly as kubectl resolves them), small focused calls that take and return plain dicts, and every API failure
mapped in one place to a typed one-line error (`.status`, `.reason`: unreachable, 401, 403, 404...)."""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from ..errors import EtcdBackupError

FIELD_MANAGER = "kubectl-etcdbackup"
TIMEOUT = (10.0, 60.0)  # (connect, read) seconds for every ordinary request


class KubeError(EtcdBackupError):
    """The Kubernetes API failed or refused a request, or no client could be set up.

    `status` is the HTTP status of the API's answer, None when there was none (unreachable, bad kubeconfig...).
    `reason` is machine-readable: the Kubernetes Status reason when the API gave one (NotFound, Forbidden,
    Unauthorized, AlreadyExists, Conflict, Invalid...), else the class's (Unreachable, BadKubeconfig...).
    Callers branch on the class, `.status` or `.reason`; the message is for people only."""

    status: int | None = None
    reason: str = "Unknown"

    def __init__(self, message: str, *, status: int | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        if reason is not None:
            self.reason = reason


class KubeConfigError(KubeError):
    """No usable kubeconfig / context."""

    reason = "BadKubeconfig"


class ClusterUnreachable(KubeError):
    """No API server answered."""

    reason = "Unreachable"


class Unauthorized(KubeError):
    """The API server rejected the credentials (HTTP 401)."""

    status, reason = 401, "Unauthorized"


class Forbidden(KubeError):
    """RBAC said no (HTTP 403)."""

    status, reason = 403, "Forbidden"


class NotFound(KubeError):
    """The object does not exist (HTTP 404)."""

    status, reason = 404, "NotFound"


class AlreadyExists(KubeError):
    """An object with that name exists already (HTTP 409, reason AlreadyExists)."""

    status, reason = 409, "AlreadyExists"


class NotInstalled(KubeError):
    """The backup CronJob is not in the namespace."""

    reason = "NotInstalled"


class NoEtcdPods(KubeError):
    """No etcd pods match the selector."""

    reason = "NoEtcdPods"


# Status reasons for answers without a Status body (k8s.io/apimachinery/pkg/api/errors).
_HTTP_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
                 409: "Conflict", 410: "Expired", 422: "Invalid", 429: "TooManyRequests", 500: "InternalError",
                 503: "ServiceUnavailable", 504: "Timeout"}


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str


def _http_status(e: ApiException) -> int | None:
    """The HTTP status of a failed call, None when no answer came."""
    if e.status:
        return int(e.status)
    m = re.search(r"Handshake status (\d+)", str(e.reason))  # websocket (exec) failures: the status is in the text
    return int(m.group(1)) if m else None


def _status_body(e: ApiException) -> tuple[str, str]:
    """(message, reason) of the API's answer: from its Status body when it has one, else ("first line", "")."""
    body = e.body.decode(errors="replace") if isinstance(e.body, bytes) else (e.body or "")
    reason = str(e.reason or "")
    if not body and "-+-+-" in reason:  # a websocket handshake error: "status -+-+- headers -+-+- body"
        body = reason.rsplit("-+-+-", 1)[1].strip()
        body = body[2:-1] if body.startswith(("b'", 'b"')) else body
    try:
        doc = json.loads(body)
        return str(doc.get("message") or e.reason or ""), str(doc.get("reason") or "")
    except (ValueError, AttributeError):
        return (body.strip().splitlines() or [reason])[0][:300], ""


def _unreachable_reason(e: BaseException) -> str:
    text = str(getattr(e, "reason", None) or e)
    for pattern, short in ((r"Connection refused", "connection refused"), (r"timed out", "timed out"),
                           (r"Name or service not known|nodename nor servname|getaddrinfo", "unknown host"),
                           (r"CERTIFICATE_VERIFY_FAILED|SSLError|certificate", "TLS error: " + text[-120:])):
        if re.search(pattern, text, re.I):
            return short
    return text.splitlines()[0][:200] if text else type(e).__name__


class Kube:
    """A connected client. Each method does one API call (or one watch/exec) and returns plain data.

    Requests go through the client's ApiClient (auth, TLS, REST) with plain paths; the typed API classes are
    not used because building them costs over a second of CPU on every command (kubernetes 37's models)."""

    def __init__(self, api: client.ApiClient, context_namespace: str | None = None,
                 context_name: str | None = None) -> None:
        self.api = api
        self.context_namespace = context_namespace
        self.context_name = context_name  # the kubeconfig context in use; None in a pod (service account)
        self._resources: dict[str, dict[str, tuple[str, bool]]] = {}

    @property
    def host(self) -> str:
        """The API server URL."""
        return str(self.api.configuration.host)

    def close(self) -> None:
        self.api.close()

    # ------------------------------------------------------------------------------------ error mapping
    @contextmanager
    def calling(self, verb: str, resource: str, namespace: str | None = None,
                name: str | None = None) -> Iterator[None]:
        """The one place where client failures become typed KubeErrors: a failure of the call inside becomes
        a KubeError subclass with `.status`/`.reason` and a one-line message saying what was attempted."""
        try:
            yield
        except ApiException as e:
            raise self._api_error(e, verb, resource, namespace, name) from None
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise self._unreachable(e) from None

    def _unreachable(self, e: BaseException) -> ClusterUnreachable:
        return ClusterUnreachable(f"cannot reach the Kubernetes API at {self.host}: {_unreachable_reason(e)}")

    def _api_error(self, e: ApiException, verb: str, resource: str, namespace: str | None,
                   name: str | None) -> KubeError:
        status = _http_status(e)
        if status is None:
            return self._unreachable(e)
        where = f" in namespace {namespace}" if namespace else ""
        what = f"{resource}/{name}" if name else resource
        msg, reason = _status_body(e)
        if status == 401:
            return Unauthorized(f"the Kubernetes API at {self.host} rejected the credentials (401 Unauthorized); "
                                "check your kubeconfig")
        if status == 403:
            return Forbidden(f"no RBAC permission to {verb} {resource}{where}")
        if status == 404:
            return NotFound(f"{what} not found{where}")
        if reason == AlreadyExists.reason:
            return AlreadyExists(f"{what}: {msg}")
        return KubeError(f"cannot {verb} {what}{where}: {msg or status}".splitlines()[0], status=status,
                         reason=reason or _HTTP_REASONS.get(status, KubeError.reason))

    # ------------------------------------------------------------------------------------ transport
    def _send(self, method: str, path: str, query: list[tuple[str, str]] | None = None, body: Any = None,
              content_type: str | None = None, timeout: tuple[float, float] = TIMEOUT) -> Any:
        """One request; returns the client's RESTResponse, body not read yet; non-2xx raises ApiException."""
        headers = {"Accept": "application/json"} | ({"Content-Type": content_type} if content_type else {})
        req = self.api.param_serialize(method, path, query_params=query or [], header_params=headers, body=body,
                                       auth_settings=["BearerToken"])
        resp = self.api.call_api(*req, _request_timeout=timeout)
        if not 200 <= resp.status <= 299:
            resp.read()
            raise ApiException.from_response(http_resp=resp, body=(resp.data or b"").decode(errors="replace"),
                                             data=None)
        return resp

    def _request(self, method: str, path: str, query: list[tuple[str, str]] | None = None, body: Any = None,
                 content_type: str | None = None) -> Any:
        """One request; the JSON body of the answer."""
        resp = self._send(method, path, query, body, content_type)
        data = resp.read()
        return json.loads(data) if data else {}

    @staticmethod
    def _ns_path(namespace: str, resource: str, name: str | None = None, group: str = "") -> str:
        base = f"/apis/{group}" if group else "/api/v1"
        return f"{base}/namespaces/{namespace}/{resource}" + (f"/{name}" if name else "")

    # ------------------------------------------------------------------------------------ reads and writes
    def get_cronjob(self, namespace: str, name: str) -> dict[str, Any]:
        with self.calling("get", "cronjobs", namespace, name):
            return dict(self._request("GET", self._ns_path(namespace, "cronjobs", name, "batch/v1")))

    def list_cronjobs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        with self.calling("list", "cronjobs", namespace):
            return list(self._request("GET", self._ns_path(namespace, "cronjobs", group="batch/v1"),
                                      [("labelSelector", selector)])["items"])

    def get_job(self, namespace: str, name: str) -> dict[str, Any]:
        with self.calling("get", "jobs", namespace, name):
            return dict(self._request("GET", self._ns_path(namespace, "jobs", name, "batch/v1")))

    def create_job(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.calling("create", "jobs", namespace):
            return dict(self._request("POST", self._ns_path(namespace, "jobs", group="batch/v1"), body=body,
                                      content_type="application/json"))

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and (in the background) its pods."""
        with self.calling("delete", "jobs", namespace, name):
            self._request("DELETE", self._ns_path(namespace, "jobs", name, "batch/v1"),
                          [("propagationPolicy", "Background")])

    def wait_job_change(self, namespace: str, name: str, resource_version: str, timeout: int) -> None:
        """Watch Job `name` from `resource_version` until its first change or `timeout` seconds."""
        query = [("watch", "true"), ("fieldSelector", f"metadata.name={name}"),
                 ("resourceVersion", resource_version), ("timeoutSeconds", str(max(1, timeout))),
                 ("allowWatchBookmarks", "false")]
        with self.calling("watch", "jobs", namespace, name):
            resp = self._send("GET", self._ns_path(namespace, "jobs", group="batch/v1"), query,
                              timeout=(TIMEOUT[0], timeout + 10.0))
            try:
                for chunk in resp.response.stream(None):  # chunked: yields as events arrive
                    if b"\n" in chunk:  # one whole event line: something changed
                        return
            finally:
                resp.response.release_conn()

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Pods matching a label selector."""
        with self.calling("list", "pods", namespace):
            return list(self._request("GET", self._ns_path(namespace, "pods"), [("labelSelector", selector)])["items"])

    def pod_log(self, namespace: str, pod: str, container: str | None = None, tail_lines: int | None = None) -> str:
        query = ([("container", container)] if container else []) + (
            [("tailLines", str(tail_lines))] if tail_lines is not None else [])
        with self.calling("get", "pods/log", namespace, pod):
            return str(self._send("GET", self._ns_path(namespace, "pods", f"{pod}/log"), query).read()
                       .decode(errors="replace"))

    def follow_log(self, namespace: str, pod: str, container: str | None, read_timeout: float) -> Any:
        """The open, streaming log of a pod (a urllib3 response: `.stream()`, `.shutdown()`, `.release_conn()`)."""
        query = [("follow", "true")] + ([("container", container)] if container else [])
        with self.calling("get", "pods/log", namespace, pod):
            return self._send("GET", self._ns_path(namespace, "pods", f"{pod}/log"), query,
                              timeout=(TIMEOUT[0], read_timeout)).response

    def get_configmap(self, namespace: str, name: str) -> dict[str, Any]:
        with self.calling("get", "configmaps", namespace, name):
            return dict(self._request("GET", self._ns_path(namespace, "configmaps", name)))

    def secret_exists(self, namespace: str, name: str) -> bool:
        try:
            with self.calling("get", "secrets", namespace, name):
                self._request("GET", self._ns_path(namespace, "secrets", name))
        except NotFound:
            return False
        return True

    def read_secret(self, namespace: str, name: str) -> dict[str, bytes]:
        with self.calling("get", "secrets", namespace, name):
            obj = self._request("GET", self._ns_path(namespace, "secrets", name))
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}

    def create_secret(self, namespace: str, body: dict[str, Any]) -> None:
        with self.calling("create", "secrets", namespace):
            self._request("POST", self._ns_path(namespace, "secrets"), body=body, content_type="application/json")

    # ------------------------------------------------------------------------------------ exec
    def exec(self, namespace: str, pod: str, container: str | None, argv: list[str], timeout: float) -> ExecResult:
        """Run argv (no shell) in a container over the exec websocket; bounded by `timeout` seconds."""
        from kubernetes.stream.ws_client import WSClient, get_websocket_url

        query = [("command", a) for a in argv] + [("stdout", "true"), ("stderr", "true"), ("stdin", "false"),
                                                   ("tty", "false")] + ([("container", container)] if container else [])
        _, url, headers, _, _ = self.api.param_serialize("GET", self._ns_path(namespace, "pods", f"{pod}/exec"),
                                                         query_params=query, header_params={},
                                                         auth_settings=["BearerToken"])
        with self.calling("create", "pods/exec", namespace, pod):
            try:
                ws = WSClient(self.api.configuration, get_websocket_url(url), headers, capture_all=True)
            except ApiException:
                raise
            except Exception as e:  # websocket-client's errors: the handshake status is in the text
                raise ApiException(status=0, reason=str(e)) from None
        try:
            ws.run_forever(timeout=timeout)
            if ws.is_open():
                raise KubeError(f"{argv[0]} in pod {namespace}/{pod} did not finish within {timeout:.0f}s",
                                reason="Timeout")
            out, err = ws.read_stdout(), ws.read_stderr()
            code = ws.returncode
        except KubeError:
            raise
        except Exception as e:  # the stream broke, or ended without an exit status
            raise KubeError(f"exec in pod {namespace}/{pod} failed: {type(e).__name__}: {e}".splitlines()[0]) \
                from None
        finally:
            ws.close()
        return ExecResult(int(code), out or "", err or "")

    # ------------------------------------------------------------------------------------ apply
    def _resource_for(self, api_version: str, kind: str) -> tuple[str, bool]:
        """(plural, namespaced) of a kind, from the API's discovery document (cached per group/version)."""
        if api_version not in self._resources:
            path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            with self.calling("discover", api_version):
                doc = self._request("GET", path)
            self._resources[api_version] = {r["kind"]: (r["name"], bool(r.get("namespaced")))
                                            for r in doc.get("resources", []) if "/" not in r["name"]}
        try:
            return self._resources[api_version][kind]
        except KeyError:
            raise KubeError(f"the cluster does not serve {kind} ({api_version})") from None

    def _path(self, obj: dict[str, Any]) -> tuple[str, str, str | None]:
        """(REST path of the object, plural, namespace)."""
        api_version, kind, md = obj["apiVersion"], obj["kind"], obj["metadata"]
        plural, namespaced = self._resource_for(api_version, kind)
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        ns = md.get("namespace") if namespaced else None
        return (f"{base}/namespaces/{ns}/{plural}/{md['name']}" if ns else f"{base}/{plural}/{md['name']}",
                plural, ns)

    def get_object(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """The live version of `obj` (same apiVersion/kind/name/namespace), or None."""
        path, plural, ns = self._path(obj)
        try:
            with self.calling("get", plural, ns, obj["metadata"]["name"]):
                return dict(self._request("GET", path))
        except NotFound:
            return None

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply (fieldManager kubectl-etcdbackup, force): create or update; returns the live object."""
        path, plural, ns = self._path(obj)
        with self.calling("apply", plural, ns, obj["metadata"]["name"]):
            return dict(self._request("PATCH", path, [("fieldManager", FIELD_MANAGER), ("force", "true")], obj,
                                      "application/apply-patch+yaml"))


# ---------------------------------------------------------------------------------------- kubeconfig and client
DEFAULT_KUBECONFIG = "~/.kube/config"
# File-path fields of a kubeconfig entry, per section; relative ones are relative to the file they are in.
_PATH_FIELDS = {"clusters": ("certificate-authority",), "users": ("client-certificate", "client-key", "tokenFile"),
                "contexts": ()}
_ENTRY_KEY = {"clusters": "cluster", "users": "user", "contexts": "context"}


def kubeconfig_files(kubeconfig: str | None = None) -> list[str]:
    """The files kubectl reads: `--kubeconfig` alone (it must exist); else the existing files listed in
    $KUBECONFIG (os.pathsep-separated, in order, each once); else ~/.kube/config if it exists."""
    if kubeconfig:
        if not os.path.isfile(kubeconfig):
            raise KubeConfigError(f"kubeconfig {kubeconfig} does not exist")
        return [kubeconfig]
    listed = os.environ.get("KUBECONFIG", "").split(os.pathsep)
    if not any(listed):
        listed = [os.path.expanduser(DEFAULT_KUBECONFIG)]
    return [f for f in dict.fromkeys(listed) if f and os.path.isfile(f)]


def merge_kubeconfigs(files: list[str]) -> dict[str, Any]:
    """One kubeconfig from several, merged as kubectl merges them: in clusters, users and contexts the first file
    that names an entry wins (a later entry of that name is ignored whole); current-context comes from the first
    file that sets a non-empty one; relative file paths (certificates, keys, tokenFile, an exec command with a
    path separator) are made absolute against the directory of the file they are in."""
    merged: dict[str, Any] = {"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": [],
                              "current-context": ""}
    for path in files:
        doc = _read_kubeconfig(path)
        base = os.path.dirname(os.path.abspath(path))
        for section in _PATH_FIELDS:
            known = {e.get("name") for e in merged[section]}
            merged[section] += [_absolute_paths(section, e, base) for e in doc.get(section) or []
                                if isinstance(e, dict) and e.get("name") not in known]
        merged["current-context"] = merged["current-context"] or doc.get("current-context") or ""
    return merged


def _read_kubeconfig(path: str) -> dict[str, Any]:
    """One kubeconfig file as a dict; an empty file is an empty config (as for kubectl)."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise KubeConfigError(f"cannot read kubeconfig {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise KubeConfigError(f"cannot use kubeconfig {path}: invalid YAML: {str(e).splitlines()[0]}") from None
    if doc is not None and not isinstance(doc, dict):
        raise KubeConfigError(f"cannot use kubeconfig {path}: not a kubeconfig (a YAML mapping)")
    return doc or {}


def _absolute_paths(section: str, entry: dict[str, Any], base: str) -> dict[str, Any]:
    """A copy of a clusters/users/contexts entry with its relative file paths joined to `base`."""
    inner = dict(entry.get(_ENTRY_KEY[section]) or {})
    for key in _PATH_FIELDS[section]:
        if inner.get(key):
            inner[key] = os.path.join(base, str(inner[key]))
    command = str((inner.get("exec") or {}).get("command") or "")
    if section == "users" and os.sep in command:  # a bare name is looked up on PATH
        inner["exec"] = {**inner["exec"], "command": os.path.join(base, command)}
    return {**entry, _ENTRY_KEY[section]: inner}


def resolve_context(kubeconfig: str | None = None, context: str | None = None) -> tuple[dict[str, Any], str]:
    """(merged kubeconfig, name of the context to use): `context` if given, else the merged current-context."""
    where = _where(kubeconfig)
    files = kubeconfig_files(kubeconfig)
    if not files:
        raise KubeConfigError(f"cannot use kubeconfig {where}: no such file")
    merged = merge_kubeconfigs(files)
    names = [c["name"] for c in merged["contexts"]]
    listed = f"(contexts: {', '.join(sorted(names)) or 'none'})"
    name = context or merged["current-context"]
    if not name:
        raise KubeConfigError(f"kubeconfig {where} sets no current context: use --context {listed}")
    if name not in names:
        raise KubeConfigError(f"no context {name} in kubeconfig {where} {listed}")
    return merged, name


def _where(kubeconfig: str | None) -> str:
    """The kubeconfig source, for messages."""
    return kubeconfig or os.environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG


def connect(kubeconfig: str | None = None, context: str | None = None) -> Kube:
    """The one way to build a client: from --kubeconfig/--context like kubectl (see resolve_context), or, in a pod
    with neither given and no kubeconfig file, from the service account. `.context_name` and `.host` say where
    it points."""
    cfg = type.__call__(client.Configuration)  # a fresh one, not a copy of the process-wide default
    cfg.retries = 1  # fail fast when nothing listens
    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST") \
            and not kubeconfig_files():
        config.load_incluster_config(client_configuration=cfg)
        return Kube(client.ApiClient(cfg))
    merged, name = resolve_context(kubeconfig, context)
    try:
        config.load_kube_config_from_dict(merged, context=name, client_configuration=cfg, persist_config=False)
    except ConfigException as e:
        text = str(e).strip().strip("'\"").splitlines()[0] if str(e).strip() else repr(e)
        raise KubeConfigError(f"cannot use kubeconfig {_where(kubeconfig)} (context {name}): {text}") from None
    namespace = next(c for c in merged["contexts"] if c["name"] == name)["context"].get("namespace")
    return Kube(client.ApiClient(cfg), namespace, name)
