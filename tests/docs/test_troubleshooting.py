"""Every message docs/troubleshooting.md explains still exists in meshca's source, as written
(`…` for the parts that vary), so the page cannot go on explaining a message nobody sees."""

from __future__ import annotations

import re

from tests.docs.markdown import page
from tests.docs.source_texts import occurs

# A message is a level-3 heading that is one code span: ### `text` (or ### ``text with `ticks` ``).
MESSAGE = re.compile(r"^### (`+)(.+?)\1$", re.M)


def documented_messages() -> list[str]:
    return [m[2].strip() for m in MESSAGE.finditer(page("troubleshooting.md"))]


def test_the_page_explains_many_messages() -> None:
    messages = documented_messages()
    assert len(messages) >= 40
    assert len(set(messages)) == len(messages), "a message is explained twice"


def test_every_documented_message_is_in_the_source() -> None:
    missing = [m for m in documented_messages() if not occurs(m)]
    assert missing == []


def test_the_check_rejects_a_message_that_is_not_there() -> None:
    assert occurs("token has expired")
    assert occurs("requested lifetime …s exceeds the maximum …s")
    assert not occurs("token has expired yesterday")
    assert not occurs("requested lifetime 5s exceeds the maximum 3s")  # a placeholder must be `…`


def test_every_message_has_a_cause_or_a_fix() -> None:
    text = page("troubleshooting.md")
    parts = MESSAGE.split(text)
    # re.split with two groups: [before, ticks, message, body, ticks, message, body, ...]
    bodies = parts[3::3]
    for message, body in zip(parts[2::3], bodies, strict=True):
        explanation = body.split("\n## ")[0].strip()
        assert len(explanation) > 20, f"{message}: no explanation"
