"""The documentation site builds with `mkdocs build --strict`: a broken link, a missing anchor,
a page left out of the nav or a nav entry without its page fails here. The CLI reference is
generated from meshca's parser during that build, so it is checked against the parser too."""

from __future__ import annotations

import argparse
import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from meshca.cli.main import build_parser
from tests.docs.markdown import DOCS

ROOT = DOCS.parent
EXISTING = ["agent.md", "agent-helm.md", "architecture.md", "contracts.md", "kubernetes.md", "vault.md"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                           env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    return out


def _nav_pages(nav: object) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in _nav_pages(value)]
    if isinstance(nav, list):
        return [p for item in nav for p in _nav_pages(item)]
    return []


def _config() -> dict[str, object]:
    class _Loader(yaml.SafeLoader):
        pass

    # mkdocs.yml may hold !!python/name tags (pymdownx); this test only reads the nav.
    _Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)
    loaded = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_Loader)  # noqa: S506
    assert isinstance(loaded, dict)
    return loaded


def test_the_site_builds_strictly_with_every_page(site: Path) -> None:
    assert (site / "index.html").is_file()
    for name in ("quickstart", "use-your-certificate", "istio", "admin-api", "cli-reference",
                 "operations", "troubleshooting", "benchmarks"):
        assert (site / name / "index.html").is_file(), name


def test_the_existing_documents_are_in_the_nav() -> None:
    nav = _nav_pages(_config()["nav"])
    for name in EXISTING:
        assert name in nav, name
    on_disk = sorted(p.name for p in DOCS.glob("*.md"))
    assert sorted(set(nav) - {"cli-reference.md"}) == on_disk


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    """The strict build is what catches broken links: prove it does, on a copy of the site."""
    copy = tmp_path / "repo"
    (copy / "docs").mkdir(parents=True)
    for path in DOCS.glob("*.md"):
        (copy / "docs" / path.name).write_text(path.read_text())
    hook = Path("hooks") / "cli_reference.py"
    (copy / "docs" / "hooks").mkdir()
    (copy / "docs" / hook).write_text((DOCS / hook).read_text())
    (copy / "mkdocs.yml").write_text((ROOT / "mkdocs.yml").read_text())
    index = copy / "docs" / "index.md"
    index.write_text(index.read_text() + "\nSee [nowhere](no-such-page.md).\n")
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                            str(tmp_path / "site")], cwd=copy, capture_output=True, text=True, timeout=300)
    assert built.returncode != 0
    assert "no-such-page.md" in built.stdout + built.stderr


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("meshca",),
              ) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command path; an alias (a second name for the same parser) has no section of its own."""
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    found += _commands(sub, (*path, name))
    return found


def test_the_cli_reference_matches_the_parser(site: Path) -> None:
    """Every command has its section, and every option of the command is in that section."""
    page = (site / "cli-reference" / "index.html").read_text()
    parts = re.split(r'<h2 id="([^"]+)"', page)
    section = {anchor: html.unescape(re.sub(r"<[^>]+>", "", body))
               for anchor, body in zip(parts[1::2], parts[2::2], strict=True)}
    for path, parser in _commands(build_parser()):
        anchor = "-".join(path)
        assert anchor in section, f"no section for {' '.join(path)}"
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert option in section[anchor], f"{' '.join(path)} {option} is not documented"


def test_gen_cli_docs_prints_the_page_the_site_has(site: Path, tmp_path: Path) -> None:
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("scripts/gen-cli-docs uses the clone's .venv; make it with scripts/test first")
    out = tmp_path / "cli.md"
    done = subprocess.run([str(ROOT / "scripts" / "gen-cli-docs"), str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "MESHCA_EXTRAS": "test"})
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert text.startswith("# CLI reference\n")
    for path, _parser in _commands(build_parser()):
        assert f"\n## {' '.join(path)}\n" in text
