"""The README and the reference pages in docs/: every relative link and anchor resolves, every page is reachable,
and the layout names only what exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def prose(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code removed."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(re.sub(r"`[^`]*`", "``", line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[*_`]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    fenced = False
    for line in page.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and (m := re.match(r"^#{1,6} (.+)$", line)):
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(page: Path) -> list[str]:
    return [target for line in prose(page.read_text()) for target in LINK.findall(line)]


def test_the_helpers_find_links_and_anchors_as_github_renders_them(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text(
        "# Lead scores (`dealstream worker scores`)\n## Why, and how?\n## Why, and how?\n"
        "```sh\n# not a heading [not](a-link.md)\n```\n"
        "See [this](#why-and-how-1), `[code](skipped.md)` and ![img](pic.png).\n"
    )
    assert anchors(page) == {"lead-scores-dealstream-worker-scores", "why-and-how", "why-and-how-1"}
    assert links(page) == ["#why-and-how-1"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto: not ours to check offline
        path, _, anchor = target.partition("#")
        goal = (page.parent / path).resolve() if path else page
        if not goal.exists():
            broken.append(f"{target}: no such file")
        elif anchor and goal.suffix == ".md" and anchor not in anchors(goal):
            broken.append(f"{target}: no such heading in {goal.relative_to(ROOT)}")
    assert not broken, broken


def test_every_reference_page_is_linked_from_the_readme() -> None:
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(ROOT / "README.md") if t.startswith("docs/")}
    assert set(PAGES[1:]) <= linked, sorted(p.name for p in set(PAGES[1:]) - linked)


def test_the_layout_names_only_folders_and_files_that_exist() -> None:
    text = (ROOT / "README.md").read_text()
    layout = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    missing = []
    for folder, contents in re.findall(r"^\| `([\w/]+/)` \| (.+) \|$", layout, re.M):
        if not (ROOT / folder).is_dir():
            missing.append(folder)
        for name in re.findall(r"`([\w/]+(?:\.py|\.toml|/))`", contents):
            if not (ROOT / folder / name).exists():
                missing.append(folder + name)
    assert layout.count("| `") >= 6 and not missing, missing
