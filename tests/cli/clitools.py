"""Running `meshca …` as a user does: a subprocess, its exit code and both streams."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHCA_")}
    env.update(extra)
    return env


def meshca(*args: str, cwd: Path, stdin: str | None = None, env: dict[str, str] | None = None,
           timeout: float = 60) -> Result:
    done = subprocess.run([sys.executable, "-m", "meshca", *args], cwd=cwd, input=stdin,
                          env=env or clean_env(), capture_output=True, text=True, timeout=timeout,
                          check=False)
    result = Result(done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def ok(result: Result) -> Result:
    assert result.rc == 0, (result.stdout, result.stderr)
    return result
