"""Decode Kubernetes protobuf request bodies (``application/vnd.kubernetes.protobuf``) into JSON dicts.

kubectl's typed clients (``kubectl create configmap|secret|job --from=...``) send protobuf and cannot be told
otherwise. The schemas come from the kubectl binary itself: Go's gogo-protobuf code registers every
``generated.proto`` as a gzipped FileDescriptorProto, so scanning the binary for gzip streams yields exactly
the schemas that kubectl encodes with. The conversion follows the Kubernetes JSON conventions (Time ->
RFC 3339, Quantity -> string, IntOrString, RawExtension, bytes -> base64, map entries -> objects).
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import os
import re
import shutil
import zlib
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

MAGIC = b"k8s\x00"
_GZIP = re.compile(rb"\x1f\x8b\x08\x00\x00\x00\x00\x00")
_META = "k8s.io.apimachinery.pkg.apis.meta.v1."


class ProtobufUnsupported(Exception):
    """No schema for this body (no kubectl binary found, unknown kind, corrupt data)."""


def find_kubectl() -> str | None:
    """$KUBECTL, then the repo's .ci/bin/kubectl, then kubectl on PATH."""
    repo_kubectl = Path(__file__).resolve().parents[2] / ".ci" / "bin" / "kubectl"
    for cand in (os.environ.get("KUBECTL"), str(repo_kubectl), shutil.which("kubectl")):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


@functools.lru_cache(maxsize=4)
def _pool(binary: str) -> descriptor_pool.DescriptorPool:
    data = Path(binary).read_bytes()
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    for m in _GZIP.finditer(data):
        try:
            raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[m.start():m.start() + 4_000_000])
            fdp = descriptor_pb2.FileDescriptorProto.FromString(raw)
        except (zlib.error, DecodeError):
            continue
        if fdp.name.endswith("generated.proto") and fdp.package.startswith("k8s.io."):
            files[fdp.name] = fdp
    if not files:
        raise ProtobufUnsupported(f"no Kubernetes protobuf descriptors found in {binary}")
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(name: str) -> None:
        if name in added or name not in files:
            return
        added.add(name)
        fdp = files[name]
        deps = [d for d in fdp.dependency if d in files]  # gogo.proto is not embedded: drop it
        for d in deps:
            add(d)
        del fdp.dependency[:]
        fdp.dependency.extend(deps)
        pool.Add(fdp)

    for name in sorted(files):
        add(name)
    return pool


def _message_name(api_version: str, kind: str) -> str:
    group, _, version = api_version.rpartition("/")
    pkg = group.split(".")[0] if group else "core"
    return f"k8s.io.api.{pkg}.{version}.{kind}"


def _time(seconds: int, nanos: int, micro: bool) -> str | None:
    if not seconds and not nanos:
        return None
    t = dt.datetime.fromtimestamp(seconds, dt.UTC).replace(microsecond=nanos // 1000)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def _duration(ns: int) -> str:
    s, rest = divmod(ns, 1_000_000_000)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    frac = f".{rest:09d}".rstrip("0") if rest else ""
    return (f"{h}h" if h else "") + (f"{m}m" if h or m else "") + f"{s}{frac}s"


def _special(desc: Descriptor, msg: Any) -> tuple[bool, Any]:
    name = desc.full_name
    if name in (_META + "Time", _META + "MicroTime"):
        return True, _time(msg.seconds, msg.nanos, name.endswith("MicroTime"))
    if name == _META + "Duration":
        return True, _duration(msg.duration)
    if name == "k8s.io.apimachinery.pkg.api.resource.Quantity":
        return True, msg.string
    if name == "k8s.io.apimachinery.pkg.util.intstr.IntOrString":
        return True, msg.strVal if msg.type == 1 else msg.intVal
    if name in ("k8s.io.apimachinery.pkg.runtime.RawExtension", _META + "FieldsV1"):
        raw = msg.raw if name.endswith("RawExtension") else msg.Raw
        return True, json.loads(raw) if raw else None
    return False, None


def _value(fd: FieldDescriptor, v: Any) -> Any:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return to_json(v)
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(v).decode()
    return v


def to_json(msg: Message) -> Any:
    """A protobuf Kubernetes object as its JSON form (empty strings and zero timestamps left out)."""
    special, value = _special(msg.DESCRIPTOR, msg)
    if special:
        return value
    out: dict[str, Any] = {}
    is_meta = msg.DESCRIPTOR.full_name == _META + "ObjectMeta"
    for fd, v in msg.ListFields():
        if is_meta and fd.name == "generation" and not v:
            continue  # a non-pointer Go field: always encoded, meaningless when 0
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            vfd = fd.message_type.fields_by_name["value"]
            out[fd.name] = {k: _value(vfd, x) for k, x in v.items()}
        elif fd.is_repeated:
            out[fd.name] = [_value(fd, x) for x in v]
        else:
            x = _value(fd, v)
            if x is not None and x != "":
                out[fd.name] = x
    return out


def decode(body: bytes, kubectl: str | None = None) -> dict[str, Any]:
    """A ``k8s\\0``-prefixed runtime.Unknown envelope -> the object as a JSON dict."""
    binary = kubectl or find_kubectl()
    if binary is None:
        raise ProtobufUnsupported("no kubectl binary to read protobuf schemas from (set $KUBECTL)")
    if not body.startswith(MAGIC):
        raise ProtobufUnsupported("protobuf body without the k8s\\0 prefix")
    pool = _pool(binary)
    unknown_cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("k8s.io.apimachinery.pkg.runtime.Unknown"))
    try:
        env = unknown_cls.FromString(body[len(MAGIC):])
        api_version, kind = env.typeMeta.apiVersion, env.typeMeta.kind
        for name in (_message_name(api_version, kind), _META + kind):  # meta/v1: DeleteOptions...
            try:
                desc = pool.FindMessageTypeByName(name)
                break
            except KeyError:
                continue
        else:
            raise ProtobufUnsupported(f"no protobuf schema for {api_version} {kind}")
        obj = to_json(message_factory.GetMessageClass(desc).FromString(env.raw))
    except DecodeError as e:
        raise ProtobufUnsupported(f"corrupt protobuf body: {e}") from None
    return {"apiVersion": api_version, "kind": kind, **obj}
