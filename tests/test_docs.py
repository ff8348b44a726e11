"""Every "docs/<page>.md §<heading>" citation in the code, scripts and docs resolves to a heading of that page."""

import re

from helpers import ROOT

CITED_FILES = [path for pattern in ("sdbnn/**/*.py", "kernels/*.py", "pipelines/*.py", "launch/**/*", "benchmarks/*.py",
                                    "tests/*.py", ".ci/*", "docs/*.md", "README.md", "pyproject.toml")
               for path in ROOT.glob(pattern) if path.is_file()]
CITATION = re.compile(r"docs/([\w.-]+\.md) §")
# what may follow a cited heading: punctuation, the end of the line, or a joining word ("§A and §B as ...")
AFTER_HEADING = r"(?=$|\s*[,.;:)\]}'\"`]|\s+(?:(?:and|as|in|for|of|with)\b|—|\())"


def headings(page: str) -> list[str]:
    text = (ROOT / "docs" / page).read_text()
    return [line.lstrip("#").strip() for line in text.splitlines() if re.match(r"#{1,6} ", line)]


def citations() -> list[tuple[str, int, str, str]]:
    """(file, line number, page, text after §) for every § of every line that cites a docs page."""
    found = []
    for path in CITED_FILES:
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            match = CITATION.search(line)
            if match:
                for section in line[match.end() - 1:].split("§")[1:]:
                    found.append((str(path.relative_to(ROOT)), number, match.group(1), section))
    return found


def test_every_docs_citation_resolves_to_a_heading():
    found = citations()
    assert len(found) >= 20  # the code cites the method page throughout
    unresolved = []
    for file, number, page, section in found:
        assert (ROOT / "docs" / page).is_file(), f"{file}:{number} cites docs/{page}, which does not exist"
        if not any(re.match(re.escape(heading) + AFTER_HEADING, section) for heading in headings(page)):
            unresolved.append(f"{file}:{number}: docs/{page} §{section.strip()[:40]}")
    assert not unresolved, "citations without a matching heading:\n" + "\n".join(unresolved)


def test_headings_are_unique_so_citations_are_unambiguous():
    for page in ("method.md", "architecture.md"):
        names = headings(page)
        assert len(names) == len(set(names)), page
