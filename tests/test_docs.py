"""The documentation a reader can follow: every relative link of the README and docs/ resolves to a
file inside the repository, and no source cites a section-sign "n" of a document that is not in it."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def relative_links(page: Path) -> list[str]:
    """The link targets of a Markdown page outside its code blocks, external ones left out."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+://|mailto:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(page):
    bad = []
    for target in relative_links(page):
        file = target.split("#")[0]
        if not file:
            continue
        resolved = (page.parent / file).resolve()
        if ROOT not in resolved.parents or not resolved.exists():
            bad.append(target)
    assert not bad, f"{page.relative_to(ROOT)}: links that do not resolve inside the repository: {bad}"


def test_the_link_reader_finds_links_and_skips_code_and_urls(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[a](docs/a.md) [b](https://x.org/b) [c](#here)\n```\n[d](not/a/link.md)\n```\n[e](../e.md#f)\n")
    assert relative_links(page) == ["docs/a.md", "#here", "../e.md#f"]


def test_no_section_sign_citations():
    """A section-sign citation pointed to a specification that is not in the repository: cite the
    primary source instead."""
    found = [f"{path.relative_to(ROOT)}:{i}" for folder in ("jaxrobust", "configs", "scripts", "tests", "docs")
             for path in sorted((ROOT / folder).rglob("*")) if path.suffix in (".py", ".md")
             for i, line in enumerate(path.read_text().splitlines(), 1) if "\u00a7" in line]
    assert not found, f"'\u00a7' citations: {found}"
