"""The user docs stand alone: every relative link (and its #anchor) resolves inside the
repository, and nothing cites the team's notes outside it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*$", re.MULTILINE)
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _files(*roots: str, suffixes: tuple[str, ...] = (".md",)) -> list[Path]:
    """Files under the given repository paths (a file or a folder, searched recursively)."""
    out: list[Path] = []
    for root in roots:
        path = ROOT / root
        found = [path] if path.is_file() else sorted(path.rglob("*"))
        out += [p for p in found if p.is_file() and p.suffix in suffixes]
    return out


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading.

    >>> slug("The miniature world (`modalign lab`)")
    'the-miniature-world-modalign-lab'
    """
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slug(h) for h in HEADING.findall(text)}


def test_slug_matches_github() -> None:
    assert slug("MIR: the Modality Integration Rate") == "mir-the-modality-integration-rate"
    assert slug("The MIR paper's sweeps") == "the-mir-papers-sweeps"
    assert slug("Baselines: MMD, KID, centroid and cosine gap") == (
        "baselines-mmd-kid-centroid-and-cosine-gap"
    )


DOCS = _files("README.md", "docs")


@pytest.mark.parametrize("doc", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for target in LINK.findall(FENCE.sub("", doc.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        inside = dest.exists() and ROOT in (dest, *dest.parents)
        if not inside or (anchor and dest.suffix == ".md" and anchor not in anchors(dest)):
            broken.append(target)
    assert not broken, f"{doc.relative_to(ROOT)}: broken links {broken}"


def test_no_reference_to_notes_outside_the_repository() -> None:
    notes = "METHODS" + ".md"  # the team's notes: never part of the repository
    assert not (ROOT / notes).exists()
    files = _files("src", "lab", "docs", "scripts", "README.md", suffixes=(".py", ".md", ".toml"))
    hits = [str(p.relative_to(ROOT)) for p in files if notes in p.read_text(encoding="utf-8")]
    assert not hits, f"files citing {notes}: {hits}"
