"""Fixtures for the Helm chart: Helm's own engine (helm-python-sdk), loaded once."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "meshca"
RELEASE = "meshca"
NAMESPACE = "meshca-system"

Manifest = dict[str, Any]


def _import_helm() -> Any:
    """helm_python, or a skip locally; in CI a missing SDK is a failure, not a skip."""
    try:
        import helm_python
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"helm-python-sdk is not installed in CI: {exc}")
        pytest.skip("helm-python-sdk is not installed (pip install helm-python-sdk)")
    return helm_python


@pytest.fixture(scope="session")
def helm() -> Any:
    return _import_helm()


@pytest.fixture(scope="session")
def chart(helm: Any) -> Iterator[Any]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def render(chart: Any) -> Callable[..., list[Manifest]]:
    """Render with Helm's engine as `helm template` would; parsed objects, NOTES left out."""
    cache: dict[tuple[str, str], list[Manifest]] = {}

    def run(values: dict[str, Any], *, namespace: str = NAMESPACE,
            release: str = RELEASE) -> list[Manifest]:
        key = (json.dumps(values, sort_keys=True), f"{release}/{namespace}")
        if key not in cache:
            files = chart.render(values, name=release, namespace=namespace, is_install=True)
            objects = [
                doc
                for path, text in sorted(files.items()) if not path.endswith("NOTES.txt")
                for doc in yaml.safe_load_all(text) if doc
            ]
            cache[key] = objects
        return copy.deepcopy(cache[key])

    return run


def one(objects: list[Manifest], kind: str) -> Manifest:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def of_kind(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [o for o in objects if o["kind"] == kind]
