"""Strict Kubernetes schema validation for tests (what `kubernetes-validate --strict` does), offline."""

from __future__ import annotations

import functools
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils as kv_utils
import pytest

K8S_VERSIONS = ["1.29.0", "1.33.0"]

# The schemas are large JSON files read on every validate() call; read each once.
if not hasattr(kv_utils.schema_contents, "cache_info"):
    kv_utils.schema_contents = functools.lru_cache(maxsize=None)(kv_utils.schema_contents)


def k8s_validate(obj: dict[str, Any], version: str) -> None:
    """Strict schema validation; an unknown apiVersion/kind (no schema) is a failure, not a warning."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError as e:
        pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {e.message}")
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} invalid for {version}: {path}: {e.message}")


def k8s_validate_all_versions(obj: dict[str, Any]) -> None:
    for version in K8S_VERSIONS:
        k8s_validate(obj, version)
