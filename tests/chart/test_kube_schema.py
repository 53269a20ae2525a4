"""The manifest checker itself: it must catch what a reviewer would miss."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.chart.conftest import Manifest, one
from tests.chart.kube_schema import SchemaError, check_object

NS = "meshca-system"


@pytest.fixture
def deployment(render: Callable[..., list[Manifest]]) -> Manifest:
    return one(render({}), "Deployment")


def _container(obj: Manifest) -> dict[str, Any]:
    container: dict[str, Any] = obj["spec"]["template"]["spec"]["containers"][0]
    return container


def test_the_rendered_deployment_passes(deployment: Manifest) -> None:
    check_object(deployment, NS)


@pytest.mark.parametrize("break_it", [
    # A typo'd field: Kubernetes would drop it silently (or refuse it with strict validation).
    lambda d: _container(d).__setitem__("securityContex", _container(d).pop("securityContext")),
    # The Python client's attribute name, not the API's.
    lambda d: _container(d).__setitem__("security_context", _container(d).pop("securityContext")),
    # Deep in the tree.
    lambda d: _container(d)["livenessProbe"]["httpGet"].__setitem__("schema", "HTTPS"),
    # Wrong types.
    lambda d: d["spec"].__setitem__("replicas", "3"),
    lambda d: _container(d)["securityContext"].__setitem__("readOnlyRootFilesystem", "true"),
    lambda d: _container(d)["securityContext"]["capabilities"].__setitem__("drop", "ALL"),
    # A required field missing.
    lambda d: _container(d).pop("name"),
    lambda d: d["spec"].pop("selector"),
], ids=["typo", "python-name", "deep-typo", "replicas-string", "bool-string", "list-string",
        "no-container-name", "no-selector"])
def test_broken_objects_are_refused(deployment: Manifest, break_it: Callable[[Manifest], Any]) -> None:
    broken = copy.deepcopy(deployment)
    break_it(broken)
    with pytest.raises(SchemaError):
        check_object(broken, NS)


def test_wrong_group_unknown_kind_and_scope_are_refused(render: Callable[..., list[Manifest]],
                                                        deployment: Manifest) -> None:
    with pytest.raises(SchemaError, match="not a kind"):
        check_object({**deployment, "apiVersion": "extensions/v1beta1"}, NS)
    with pytest.raises(SchemaError, match="not a kind"):
        check_object({**deployment, "kind": "StatefulSet"}, NS)
    with pytest.raises(SchemaError, match="not 'elsewhere'"):
        check_object(deployment, "elsewhere")
    cluster_role = one(render({}), "ClusterRole")
    cluster_role["metadata"]["namespace"] = NS
    with pytest.raises(SchemaError, match="cluster-scoped"):
        check_object(cluster_role, NS)


def test_service_monitor_typos_are_refused(render: Callable[..., list[Manifest]]) -> None:
    monitor = one(render({"serviceMonitor": {"enabled": True}}), "ServiceMonitor")
    check_object(monitor, NS)
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(SchemaError):
        check_object(monitor, NS)
