"""Loads tests/authz_cases: the conformance cases every transport must answer alike."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CASES_DIR = Path(__file__).resolve().parents[2] / "authz_cases"
ABSENT = "<absent>"
COMPARED = ("decision", "policy", "rule", "reason")


@dataclass(frozen=True)
class Case:
    id: str
    policies: list[dict[str, Any]]
    request: dict[str, Any]  # with any `mesh` override inside
    expect: dict[str, Any]


def merge(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in change.items():
        if value == ABSENT:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "labels":
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_cases() -> list[Case]:
    default_base = yaml.safe_load((CASES_DIR / "base.yaml").read_text())
    cases = []
    for path in sorted(CASES_DIR.glob("0*.yaml")):
        data = yaml.safe_load(path.read_text())
        base = data.get("base", default_base)
        for index, case in enumerate(data["cases"]):
            request = merge(base, case.get("request", {}))
            if data.get("mesh"):
                request["mesh"] = {**data["mesh"], **request.get("mesh", {})}
            if request.get("protocol") == "TCP":
                request.pop("http", None)
            cases.append(Case(f"{path.stem}[{index}] {case['name']}", data["policies"], request,
                              case["expect"]))
    return cases


def load_invalid() -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = yaml.safe_load((CASES_DIR / "invalid.yaml").read_text())
    return loaded


def expected(case: Case) -> dict[str, Any]:
    return {k: case.expect.get(k) for k in COMPARED}


def answered(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: answer.get(k) for k in COMPARED}
