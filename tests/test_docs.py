"""The docs against what they describe: every "docs/<page>.md §<heading>" citation resolves to a heading, and every
table of numbers in README.md and docs/ is what `python -m benchmarks.readme` renders from the committed result files
and the code (no test here matches prose)."""

import json
import re
import shutil

import pytest
from helpers import ROOT

CITED_FILES = [path for pattern in ("sdbnn/**/*.py", "kernels/*.py", "pipelines/*.py", "launch/**/*", "benchmarks/**/*.py",
                                    "studies/*.py", "studies/README.md", "tests/*.py", ".ci/*", "docs/*.md", "README.md",
                                    "pyproject.toml")
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
    for page in [path.name for path in (ROOT / "docs").glob("*.md")]:
        names = headings(page)
        assert len(names) == len(set(names)), page


def test_generated_blocks_are_up_to_date():
    from benchmarks import readme

    assert readme.stale_documents(ROOT, write=False) == [], "run python -m benchmarks.readme"


# what `python -m benchmarks.readme` reads besides the code
RENDER_INPUTS = ["README.md", "docs", "launch/configs", "benchmarks/gpu_session.sh", "benchmarks/results",
                 "studies/results"]


def test_check_fails_after_a_number_in_a_result_file_changes(tmp_path):
    from benchmarks import readme

    for name in RENDER_INPUTS:
        source, target = ROOT / name, tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.png"))
        else:
            shutil.copy(source, target)
    loaders = sorted(tmp_path.glob("benchmarks/results/loaders-*.json"))[-1]
    result = json.loads(loaders.read_text())
    result["imagenet_ffcv_over_torchvision"] += 1.0  # one ratio, as a re-run would change it
    loaders.write_text(json.dumps(result))
    only = {"loaders", "performance"}  # the blocks that read this file (rendering every block costs ~20 s)
    assert readme.stale_documents(tmp_path, write=False, only=only) == [tmp_path / "README.md",
                                                                       tmp_path / "docs" / "benchmarks.md"]
    assert readme.main(["--check", "--root", str(tmp_path)]) == 1
    readme.stale_documents(tmp_path, write=True, only=only)
    assert f"{result['imagenet_ffcv_over_torchvision']:.2f}×" in (tmp_path / "README.md").read_text()
    assert readme.stale_documents(tmp_path, write=False, only=only) == []


def test_every_test_the_reliability_table_names_exists():
    """README "Reliability": each fault's row names the tests that try it as tests/<file>.py::<test>; every one is a
    test function of that file."""
    import ast

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("\n## Reliability\n"):]
    section = section[:section.index("\n## ", 1)]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "::test_" in line]
    assert len(rows) >= 15, "the reliability table lost rows"
    named = re.findall(r"`(tests/[\w/]+\.py)::(test_\w+)`", section)
    assert all(re.search(r"`tests/[\w/]+\.py::test_\w+`", row) for row in rows)
    for file, test in named:
        path = ROOT / file
        assert path.is_file(), f"README names {file}::{test}, and {file} does not exist"
        tests = {node.name for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}
        assert test in tests, f"README names {file}::{test}, which {file} does not define"


@pytest.mark.parametrize("launcher,script", [("cifar", "launch/cifar.py"), ("imagenet", "launch/imagenet.py")])
def test_the_documented_commands_use_existing_flags(launcher, script):
    """Every `--flag` after a launcher script on a line of README.md or docs/ is a flag of that launcher (or of
    `accelerate launch`, before it)."""
    from sdbnn.engine import cli

    parser, _ = {"cifar": cli.cifar_parser, "imagenet": cli.imagenet_parser}[launcher]()
    text = "\n".join(path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    commands = [line for line in re.split(r"(?<!\\)\n", text) if script in line]
    assert commands, f"the docs show no {script} command"
    used = {flag for line in commands for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", line.split(script, 1)[1])}
    accelerate_flags = {"--multi_gpu", "--num_processes", "--config_file"}
    unknown = used - set(parser._option_string_actions) - accelerate_flags
    assert not unknown, f"the docs use {sorted(unknown)} with {script}"
