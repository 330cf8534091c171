"""The documents the code cites are in the repository: every ``docs/...`` or ``*.md`` path named in the
source (docstrings, comments, strings) exists, a cited section of docs/science.md exists, the links
between documents resolve, and nothing cites the guidance kept outside the repository."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("backend", "workers", "frontend", "tests", "benchmarks")
SUFFIXES = (".py", ".js", ".html", ".css")
CITED = re.compile(r"(?<![\w/.-])((?:\.\./)*[\w./-]*[\w-]\.md|docs/[\w./-]*[\w-])\b")
SECTION = re.compile(r"docs/(\w+\.md),? sections? (\d+)")
OUTSIDE = ("DESIGN.md", "SCIENCE.md")


def _sources() -> list[Path]:
    return sorted(p for top in SOURCES for p in (ROOT / top).rglob("*")
                  if p.suffix in SUFFIXES and p.is_file() and p.name != "test_docs.py")  # (this file: examples)


def cited_paths(text: str) -> set[str]:
    return {m.group(1) for m in CITED.finditer(text)}


def _resolves(cited: str, where: Path) -> bool:
    return (ROOT / cited).exists() or (where.parent / cited).exists()


def missing_citations(files: list[Path]) -> dict[str, list[str]]:
    out = {}
    for f in files:
        bad = sorted(c for c in cited_paths(f.read_text(errors="replace")) if not _resolves(c, f))
        if bad:
            out[str(f.relative_to(ROOT) if f.is_relative_to(ROOT) else f)] = bad
    return out


def _headings(doc: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in doc.read_text().splitlines() if line.startswith("#")]


def _anchor(heading: str) -> str:  # GitHub's rule: lower case, punctuation dropped, spaces to dashes
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_the_three_documents_exist():
    for name in ("architecture.md", "science.md", "operations.md"):
        assert (ROOT / "docs" / name).read_text().startswith("# ")


def test_every_cited_document_exists():
    files = _sources()
    assert len(files) > 50
    assert missing_citations(files) == {}


def test_the_check_catches_a_missing_document(tmp_path):
    f = tmp_path / "mod.py"
    f.write_text('"""See docs/science.md section 2 and docs/nowhere.md; also ../lost/NOTES.md."""\n')
    assert missing_citations([f]) == {str(f): ["../lost/NOTES.md", "docs/nowhere.md"]}


def test_cited_sections_exist():
    numbered = {name: {h.split(".")[0] for h in _headings(ROOT / "docs" / name) if h[:1].isdigit()}
                for name in ("science.md",)}
    assert {"2", "3", "4", "5", "9"} <= numbered["science.md"]
    bad = []
    for f in _sources():
        for doc, number in SECTION.findall(f.read_text(errors="replace")):
            if number not in numbered.get(doc, {number}):
                bad.append(f"{f.relative_to(ROOT)}: {doc} section {number}")
    assert bad == []


def test_links_between_documents_resolve():
    docs = sorted((ROOT / "docs").glob("*.md"))
    bad = []
    for doc in docs:
        for target in re.findall(r"\]\(([^)]+)\)", doc.read_text()):
            if target.startswith("http"):
                continue
            path, _, anchor = target.partition("#")
            where = (doc.parent / path) if path else doc
            if not where.exists():
                bad.append(f"{doc.name}: {target}")
            elif anchor and anchor not in {_anchor(h) for h in _headings(where)}:
                bad.append(f"{doc.name}: {target} (no such section)")
    assert bad == []


def test_nothing_cites_the_guidance_outside_the_repository():
    bad = [str(f.relative_to(ROOT)) for f in _sources() if any(name in f.read_text(errors="replace") for name in OUTSIDE)]
    assert bad == []


def test_the_readme_layout_names_docs():
    layout = (ROOT / "README.md").read_text().split("## Layout", 1)[1]
    assert "docs/" in layout
