"""chart/README.md is generated from the annotated chart/values.yaml by scripts/gen-chart-readme.py: it is in
sync, and every value has a `# --` description."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _gen() -> Any:
    spec = importlib.util.spec_from_file_location("gen_chart_readme", ROOT / "scripts" / "gen-chart-readme.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = gen  # dataclasses look their module up
    spec.loader.exec_module(gen)
    return gen


def test_every_value_has_a_description() -> None:
    gen = _gen()
    text = (ROOT / "chart" / "values.yaml").read_text()
    values = yaml.safe_load(text)
    docs = gen.parse_docs(text)
    assert gen.undocumented(values, docs) == []
    assert all(d.description for d in docs.values())
    for key in ("distribution", "global", "commonLabels", "etcd.clientCertSecret", "continuous.enabled",
                "continuous.maxLag", "exporter.s3.existingSecret", "backup.extraVolumes", "test.affinity"):
        assert key in docs, key


def test_readme_is_up_to_date() -> None:
    readme, missing = _gen().build()
    assert not missing
    assert (ROOT / "chart" / "README.md").read_text() == readme, \
        "chart/README.md is out of date: run scripts/gen-chart-readme.py"


def test_undocumented_values_are_found() -> None:
    gen = _gen()
    text = "# -- documented\na: 1\nb:\n  # -- a map as a whole\n  c:\n    d: 1\n  e: 2\nlist:\n  - x: 1\n"
    values = yaml.safe_load(text)
    docs = gen.parse_docs(text)
    assert sorted(docs) == ["a", "b.c"]
    assert gen.undocumented(values, docs) == ["b.e", "list"]
