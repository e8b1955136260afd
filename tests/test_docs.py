"""The README and docs/ pages: every relative link and #anchor resolves; the quick start leads.

The checker reads Markdown the way GitHub renders it, as far as links go: fenced code blocks
and code spans hold no links or headings, and a heading's anchor is its GitHub slug (lowercase,
punctuation dropped except hyphens, spaces to hyphens, ``-1``, ``-2``... for repeats). External
links are only checked to be well-formed: the suite never leaves 127.0.0.1.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit

import pytest

ROOT: Final = Path(__file__).resolve().parent.parent
README: Final = ROOT / "README.md"
DOCS: Final = ROOT / "docs"
DOC_PAGES: Final = sorted(DOCS.glob("*.md"))
CHECKED: Final = [README, *DOC_PAGES, ROOT / "bench" / "RESULTS.md"]

_FENCE: Final = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)")
_CODE_SPAN: Final = re.compile(r"(?<!`)(`+)(?!`)((?:(?!\n[ \t]*\n).)+?)(?<!`)\1(?!`)", re.DOTALL)
_HEADING: Final = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$", re.MULTILINE)
_LINK: Final = re.compile(r"!?\[([^\]]*)\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE: Final = re.compile(r"^ {0,3}\[[^\]]+\]:[ \t]*<?(\S+?)>?(?:[ \t]+.*)?$", re.MULTILINE)
_AUTOLINK: Final = re.compile(r"<([A-Za-z][A-Za-z0-9+.-]*:[^<>\s]*)>")
_HTML_ID: Final = re.compile(r"<a\s[^>]*\b(?:id|name)=\"([^\"]+)\"", re.IGNORECASE)
_LINE_ANCHOR: Final = re.compile(r"L\d+(?:-L\d+)?")


@dataclass(frozen=True)
class Fence:
    """A fenced code block: its info string, its first and last line (1-based), its content."""

    info: str
    start: int
    end: int
    content: str


def fences(text: str) -> list[Fence]:
    """The fenced code blocks of a Markdown text, in order (an unclosed one runs to the end)."""
    blocks: list[Fence] = []
    lines = text.split("\n")
    opening: tuple[str, str, int] | None = None
    for number, line in enumerate(lines, 1):
        match = _FENCE.match(line)
        if opening is None:
            if match:
                opening = (match.group(1), match.group(2), number)
            continue
        mark, info, start = opening
        if match and match.group(1).startswith(mark) and not line.strip().strip(mark[0]):
            blocks.append(Fence(info, start, number, "\n".join(lines[start : number - 1])))
            opening = None
    if opening is not None:
        _, info, start = opening
        blocks.append(Fence(info, start, len(lines), "\n".join(lines[start:])))
    return blocks


def prose(text: str) -> str:
    """The text with code blocks and code spans blanked out, line numbers kept."""
    lines = text.split("\n")
    for block in fences(text):
        for index in range(block.start - 1, block.end):
            lines[index] = ""
    return _CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), "\n".join(lines))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's Markdown text (before numbering repeats)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link reads as its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    kept = (
        ch for ch in text if ch in " -_" or ch.isalnum() or unicodedata.category(ch).startswith("M")
    )
    return "".join(kept).replace(" ", "-")


def anchors_of(text: str) -> set[str]:
    """Every anchor GitHub gives a Markdown text: heading slugs, numbered as github-slugger does."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for match in _HEADING.finditer(prose(text)):
        base = result = slug(match.group(2))
        while result in seen:
            seen[base] += 1
            result = f"{base}-{seen[base]}"
        seen[result] = 0
        found.add(result)
    found.update(_HTML_ID.findall(prose(text)))
    return found


@cache
def _anchors_of_file(path: Path) -> frozenset[str]:
    """The anchors of a Markdown file, read once."""
    return frozenset(anchors_of(path.read_text(encoding="utf-8")))


def _check_external(target: str) -> str | None:
    """Why an external link is malformed, or None; it is never fetched."""
    try:
        parts = urlsplit(target)
        host = parts.hostname or ""
    except ValueError:
        return "malformed URL"
    if parts.scheme == "mailto":
        return None if re.fullmatch(r"[^@\s]+@[^@\s]+", parts.path) else "malformed mailto link"
    if parts.scheme not in ("http", "https"):
        return f"unsupported link scheme {parts.scheme!r}"
    if not re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)*", host) or "." not in host.strip("."):
        return "external link without a proper host name"
    return None


def _check_target(path: Path, root: Path, target: str) -> str | None:
    """Why one link target of ``path`` does not resolve, or None when it does."""
    if not target:
        return "empty link target"
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", target):
        return _check_external(target)
    address, _, fragment = target.partition("#")
    fragment = unquote(fragment)
    if address.startswith("/"):
        return "an absolute path; write the link relative to this file"
    linked = (path.parent / unquote(address)).resolve() if address else path.resolve()
    if not linked.is_relative_to(root.resolve()):
        return "points outside the repository"
    if not linked.exists():
        return "no such file"
    if not fragment:
        return None
    if linked.suffix == ".md":
        found = fragment in _anchors_of_file(linked)
        return None if found else f"no heading with anchor #{fragment}"
    if linked.is_file() and _LINE_ANCHOR.fullmatch(fragment):
        return None
    return f"anchor #{fragment} on a file that is not Markdown"


def check_links(path: Path, root: Path = ROOT) -> list[str]:
    """Every broken link of a Markdown file, as ``file:line: target: why``."""
    text = path.read_text(encoding="utf-8")
    visible = prose(text)
    found = [(m.start(2), m.group(2)) for m in _LINK.finditer(visible)]
    found += [(m.start(1), m.group(1)) for m in _REFERENCE.finditer(visible)]
    found += [(m.start(1), m.group(1)) for m in _AUTOLINK.finditer(visible)]
    problems = []
    for offset, target in sorted(found):
        why = _check_target(path, root, target)
        if why is not None:
            line = visible.count("\n", 0, offset) + 1
            name = path.relative_to(root) if path.is_relative_to(root) else path
            problems.append(f"{name}:{line}: {target or '()'}: {why}")
    return problems


def _links(path: Path) -> set[str]:
    """The link targets of a Markdown file, anchors dropped."""
    return {m.group(2).partition("#")[0] for m in _LINK.finditer(prose(path.read_text("utf-8")))}


@pytest.mark.parametrize("path", CHECKED, ids=[str(p.relative_to(ROOT)) for p in CHECKED])
def test_every_link_resolves(path: Path) -> None:
    """Every link of the README, a docs page or the bench results reaches its file and heading."""
    assert path.is_file()
    assert check_links(path) == []


def test_every_docs_page_is_listed_in_the_readme() -> None:
    """The README's Read on list links every page under docs/, so a new page cannot be orphaned."""
    assert len(DOC_PAGES) >= 10
    listed = _links(README)
    assert [p.name for p in DOC_PAGES if f"docs/{p.name}" not in listed] == []


@pytest.mark.parametrize("path", DOC_PAGES, ids=[p.name for p in DOC_PAGES])
def test_every_docs_page_has_a_title_a_lead_and_a_way_back(path: Path) -> None:
    """A docs page opens with its title and a one-line lead, and links back to the README."""
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[0].startswith("# ")
    assert lines[1] == ""
    assert lines[2] and not lines[2].startswith(("#", "[", "|", "-"))
    assert lines[3] == ""
    assert "../README.md" in _links(path)


def test_the_readme_opens_with_the_two_set_up_commands() -> None:
    """The README's first two ``sh`` blocks are the sandbox send and the test run, in that order."""
    shell = [b for b in fences(README.read_text(encoding="utf-8")) if b.info == "sh"]
    first, second = shell[0].content, shell[1].content
    setup = "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && "
    assert first == setup + ".venv/bin/bulk-sender send samples/campaign.csv --sandbox"
    assert second == setup + ".venv/bin/python -m pytest -q"


def test_slug_follows_github() -> None:
    """Headings turn into GitHub's anchors: lowercase, punctuation dropped, spaces to hyphens."""
    assert slug("Resuming and the journal") == "resuming-and-the-journal"
    assert slug("Why the client is not aiohttp's `ClientSession`") == (
        "why-the-client-is-not-aiohttps-clientsession"
    )
    assert slug("Failed-row export") == "failed-row-export"
    assert slug("`[sending] planner` = auto") == "sending-planner--auto"
    assert slug("See [the API](kaleyra-api.md), 2.0") == "see-the-api-20"
    assert slug("bulk_sender.finished") == "bulk_senderfinished"


def test_repeated_headings_are_numbered() -> None:
    """A repeated heading gets -1, -2 as on GitHub, and a literal "x-1" heading is not reused."""
    text = "# Notes\n\n## Notes\n\n## Notes-1\n\n## Notes\n"
    assert anchors_of(text) == {"notes", "notes-1", "notes-1-1", "notes-2"}


def test_headings_and_links_inside_code_do_not_count(tmp_path: Path) -> None:
    """A `#` line in a code block is no heading, and a link in code is not checked."""
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n```sh\n# not a heading\n[x](missing.md)\n```\n\n"
        "Text with `[y](missing.md)` in code, [a real one](#page), and [no](#not-a-heading).\n",
        encoding="utf-8",
    )
    assert anchors_of(page.read_text(encoding="utf-8")) == {"page"}
    assert check_links(page, tmp_path) == [
        "page.md:8: #not-a-heading: no heading with anchor #not-a-heading"
    ]


def test_fences_close_only_on_their_own_kind() -> None:
    """A fence closes on a run of its own character at least as long, with no info string."""
    text = "````md\n```sh\nx\n```\n````\n\n~~~\n```\n~~~\n\n```sh\nopen"
    assert fences(text) == [
        Fence("md", 1, 5, "```sh\nx\n```"),
        Fence("", 7, 9, "```"),
        Fence("sh", 11, 12, "open"),
    ]


def test_broken_links_are_reported(tmp_path: Path) -> None:
    """The checker names each broken link with its line: missing file, missing anchor, bad URL."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## Part two\n", encoding="utf-8")
    (tmp_path / "code.py").write_text("x = 1\n", encoding="utf-8")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "# Page\n\n"
        "[fine](other.md#part-two) [fine](../code.py#L1) [fine](https://example.com/a#b)\n"
        "[gone](missing.md) [wrong anchor](other.md#part-three)\n"
        "[wrong case](other.md#Part-two) [out](../../elsewhere.md) [rooted](/docs/other.md)\n"
        "[bad url](https://localhost/) [scheme](ftp://example.com/x) [empty]() [v6](http://[::1)\n"
        "[code anchor](../code.py#main)\n\n[ref]: other.md#nowhere\n",
        encoding="utf-8",
    )
    assert check_links(page, tmp_path) == [
        "docs/page.md:4: missing.md: no such file",
        "docs/page.md:4: other.md#part-three: no heading with anchor #part-three",
        "docs/page.md:5: other.md#Part-two: no heading with anchor #Part-two",
        "docs/page.md:5: ../../elsewhere.md: points outside the repository",
        "docs/page.md:5: /docs/other.md: an absolute path; write the link relative to this file",
        "docs/page.md:6: https://localhost/: external link without a proper host name",
        "docs/page.md:6: ftp://example.com/x: unsupported link scheme 'ftp'",
        "docs/page.md:6: (): empty link target",
        "docs/page.md:6: http://[::1: malformed URL",
        "docs/page.md:7: ../code.py#main: anchor #main on a file that is not Markdown",
        "docs/page.md:9: other.md#nowhere: no heading with anchor #nowhere",
    ]
