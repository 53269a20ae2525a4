"""The console's HTML: one layout, one body per page, read once from templates/."""

from __future__ import annotations

from functools import cache
from importlib import resources
from string import Template

from meshca import __version__

# (path under /ui/, template name, title): the navigation, in order.
PAGES = (
    ("", "overview", "Overview"),
    ("ca", "ca", "Certificate authority"),
    ("certificates", "certificates", "Certificates"),
    ("identities", "identities", "Identities"),
    ("policies", "policies", "Policies"),
    ("audit", "audit", "Audit log"),
    ("issuance", "issuance", "Issuance"),
)


@cache
def _template(name: str) -> str:
    return (resources.files(__package__) / "templates" / f"{name}.html").read_text("utf-8")


@cache
def render(page: str) -> bytes:
    """The whole document of `page` (a template name from PAGES)."""
    title = next(t for _, name, t in PAGES if name == page)
    current = ' aria-current="page"'
    nav = "\n".join(
        f'<li><a href="/ui/{path}"{current if name == page else ""}>{text}</a></li>'
        for path, name, text in PAGES)
    return Template(_template("layout")).substitute(
        title=title, page=page, nav=nav, body=_template(page), version=__version__).encode()


@cache
def docs_page() -> bytes:
    return _template("docs").encode()
