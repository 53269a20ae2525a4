"""The Dockerfile, checked statically (no Docker engine here) and against the chart that runs it."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.chart.conftest import ROOT, Manifest, one

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions per stage, continuation lines joined, comments dropped, ARG defaults applied."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"

    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        word, _, tail = line.partition(" ")
        keyword, rest = word.upper(), tail.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], words[0])
            stage_name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, stage_name))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest))
    return stages


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories wins."""
    excluded = False
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern[1:] if negate else pattern
        regex = re.escape(glob.strip("/")).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            excluded = not negate
    return excluded


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


@pytest.fixture(scope="module")
def ignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.fixture
def deployment(render: Callable[..., list[Manifest]]) -> Manifest:
    callers = [{"podSelector": {"matchLabels": {"istio": "ingressgateway"}}}]
    # Every listener the chart can open, so that the image's EXPOSE names each of their ports.
    return one(render({"extAuthz": {"enabled": True, "callers": callers},
                       "federation": {"enabled": True}}), "Deployment")


def test_multi_stage_build_into_a_slim_python_311(stages: list[Stage], final: Stage) -> None:
    assert len(stages) >= 2
    builder = stages[0]
    assert builder.name == "builder"
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", final.base), final.base
    assert builder.base == final.base, "the venv's interpreter links must resolve in the final image"
    build = " ".join(builder.all("RUN"))
    assert "pip wheel" in build and "venv /opt/meshca" in build and "meshca-*.whl" in build
    # The final image gets the finished venv; it builds and downloads nothing itself.
    for command in final.all("RUN"):
        assert not re.search(r"pip install|apt-get install|curl|wget", command), command
    assert final.all("ADD") == []


def test_final_user_is_numeric_non_root_and_is_the_chart_user(final: Stage, deployment: Manifest) -> None:
    user = final.all("USER")[-1]
    assert re.fullmatch(r"\d+:\d+", user), f"USER {user} must be numeric (runAsNonRoot checks the UID)"
    uid, gid = (int(x) for x in user.split(":"))
    assert uid != 0 and gid != 0
    assert f"--uid {uid}" in " ".join(final.all("RUN"))
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"]) == (uid, gid, gid)
    # Nothing runs as root after the user switch.
    index = final.instructions.index(("USER", user))
    assert [kw for kw, _ in final.instructions[index:]].count("RUN") == 0


def test_entrypoint_is_meshca_serve(final: Stage, deployment: Manifest) -> None:
    entrypoint = json.loads(final.all("ENTRYPOINT")[-1])  # exec form: signals reach meshca
    assert entrypoint == ["meshca", "serve"]
    assert final.all("CMD") == []
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["meshca"] == "meshca.cli.main:main"
    assert "/opt/meshca/bin" in " ".join(final.all("ENV")).split("PATH=", 1)[1].split()[0]
    assert "command" not in deployment["spec"]["template"]["spec"]["containers"][0]


def test_no_secret_or_state_enters_the_image(stages: list[Stage], final: Stage,
                                             ignore_patterns: list[str]) -> None:
    for command in final.all("COPY"):
        assert command.startswith("--from=builder "), f"final stage copies from the context: {command}"
    for stage in stages:
        for kw, rest in stage.instructions:
            if kw in ("ENV", "ARG"):
                for word in shlex.split(rest):
                    name = word.split("=", 1)[0].upper()
                    assert not re.search(r"PASSWORD|TOKEN|SECRET|KEK\b|_KEY\b", name), word
    for path in [".git/config", ".venv/bin/python", "meshca-data/ca-key.pem", "meshca-data/admin-token",
                 "tests/unit/pki.py", "charts/meshca/values.yaml", "meshca/anything/leaf.key",
                 "meshca/x/root-cert.pem", "meshca/cli/__pycache__/main.cpython-311.pyc", ".ci/run",
                 "scripts/run", "data.kek"]:
        assert dockerignore_excludes(ignore_patterns, path), f"{path} would be sent to the build"
    # What the builder copies must still be in the context.
    for command in stages[0].all("COPY"):
        for source in shlex.split(command)[:-1]:
            assert (ROOT / source).exists(), source
            assert not dockerignore_excludes(ignore_patterns, source), f"{source} is ignored"
    for path in ["meshca/cli/main.py", "meshca/infra/db/migrations/script.py.mako", "meshca/py.typed"]:
        assert not dockerignore_excludes(ignore_patterns, path), path
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"]
    assert any(readme in shlex.split(c) for c in stages[0].all("COPY")), "pyproject's readme is needed"


def test_data_dir_and_ports_agree_with_the_chart(final: Stage, deployment: Manifest) -> None:
    env = dict(word.split("=", 1) for rest in final.all("ENV") for word in shlex.split(rest))
    state = "/var/lib/meshca"
    assert re.search(rf"install -d -o 10001 -g 10001 -m 0700 {state}\b", " ".join(final.all("RUN")))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert f"--data-dir={env['MESHCA_DATA_DIR']}" in args
    assert env["MESHCA_DATA_DIR"].startswith(state + "/")
    assert state in {m["mountPath"] for m in container["volumeMounts"]}

    exposed = {int(p) for rest in final.all("EXPOSE") for p in rest.split()}
    assert {p["containerPort"] for p in container["ports"]} == exposed
    for name in ("GRPC_ADDR", "ADMIN_ADDR", "METRICS_ADDR"):
        flag = "--" + name.lower().replace("_", "-")
        assert f"{flag}={env['MESHCA_' + name]}" in args


def test_dockerignore_matcher_follows_docker_rules() -> None:
    patterns = ["*", "!src", "src/**/*.pem", "**/__pycache__"]
    assert dockerignore_excludes(patterns, "secrets.txt")
    assert dockerignore_excludes(patterns, "other/dir/file")
    assert not dockerignore_excludes(patterns, "src/a.py")
    assert dockerignore_excludes(patterns, "src/a/b/key.pem")
    assert dockerignore_excludes(patterns, "src/__pycache__/a.pyc")


def test_parser_reads_continuations_and_args() -> None:
    text = ("ARG BASE=python:3.11-slim\nFROM ${BASE} AS b\n# c\nRUN a \\\n # inner\n  && b\n"
            "FROM $BASE\nUSER 1:1\n")
    parsed = parse_dockerfile(text)
    assert [(s.base, s.name) for s in parsed] == [("python:3.11-slim", "b"), ("python:3.11-slim", None)]
    assert parsed[0].all("RUN") == ["a  && b"]
    assert Path(DOCKERFILE).is_file()
