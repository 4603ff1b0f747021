"""Every markdown link in README.md and docs/*.md points at a file that exists and, with `#anchor`, at one of its
headings (GitHub's slugs); the README stays a front door of at most 250 lines."""

import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXTERNAL = re.compile(r"^(https?:|mailto:)")
_md = MarkdownIt("commonmark").enable("table")


def _inline_tokens(text: str) -> list[Token]:
    return [t for t in _md.parse(text) if t.type == "inline"]


def _slug(heading: str) -> str:
    # GitHub: lowercase, drop punctuation but '-' and '_', spaces to '-'
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    tokens = _md.parse(text)
    seen: dict[str, int] = {}
    out = set()
    for i, tok in enumerate(tokens):
        if tok.type != "heading_open":
            continue
        plain = "".join(c.content for c in tokens[i + 1].children or [] if c.type in ("text", "code_inline"))
        slug = _slug(plain)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(text: str) -> list[str]:
    found = []
    for inline in _inline_tokens(text):
        for child in inline.children or []:
            if child.type == "link_open":
                found.append(str(child.attrs["href"]))
            elif child.type == "image":
                found.append(str(child.attrs["src"]))
    return found


def broken_links(page: Path) -> list[str]:
    broken = []
    for href in links(page.read_text()):
        if EXTERNAL.match(href):
            continue
        path, _, anchor = href.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{href}: no file {target}")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target.read_text()):
            broken.append(f"{href}: no heading #{anchor} in {target.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_readme_is_at_most_250_lines() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_slugs_follow_github() -> None:
    text = "# A `facepipe bench`: run\n## Dead letters (DLQ)\n## Dead letters (DLQ)\n## snake_case-x\n"
    assert anchors(text) == {"a-facepipe-bench-run", "dead-letters-dlq", "dead-letters-dlq-1", "snake_case-x"}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("[ok](other.md#title) [up](#here)\n# here\n", []),
        ("[gone](missing.md)\n", ["missing.md: no file"]),
        ("[bad anchor](other.md#nope)\n", ["other.md#nope: no heading #nope in other.md"]),
        ("![img](nothing.png)\n", ["nothing.png: no file"]),
        ("[ext](https://example.org/x) [mail](mailto:a@b.c)\n", []),
    ],
)
def test_the_check_catches_broken_links(tmp_path: Path, body: str, expected: list[str]) -> None:
    (tmp_path / "other.md").write_text("# Title\n")
    page = tmp_path / "page.md"
    page.write_text(body)
    found = broken_links(page)
    assert len(found) == len(expected)
    assert all(f.startswith(e) for f, e in zip(found, expected, strict=True))
