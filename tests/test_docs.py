"""The repository is self-contained: nothing cites specification files that are not in it, every
``docs/design.md#<section>`` a file cites exists, and the README links the design document."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ["piip_llava", "scripts", "eval", "serve", "benchmarks", "docs", "tests", "README.md", "Makefile",
           "pyproject.toml"]  # fmt: skip
TEXT_SUFFIXES = {".py", ".sh", ".md", ".txt", ".yaml", ".yml", ".json", ".toml", ".jinja", ".cfg", ""}
# Built from parts so that this file does not match itself.
EXTERNAL_SPECS = re.compile(
    "|".join(
        re.escape(name)
        for name in [
            "piip" + ".md",
            "llava-ecosystem" + ".md",
            "official-checkpoint-layout" + ".md",
            "environment" + ".md",
            "../" + "shared",
            "shared/" + "spec",
        ]
    )  # fmt: skip
)
DESIGN_ANCHOR = re.compile(r"design\.md#([a-z0-9_-]+)")


def scanned_files():
    for entry in SCANNED:
        path = ROOT / entry
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            if file.suffix in TEXT_SUFFIXES and "__pycache__" not in file.parts and file.stat().st_size < 2_000_000:
                yield file


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_nothing_cites_specification_files_outside_the_repository():
    hits = [
        f"{file.relative_to(ROOT)}:{number}: {line.strip()}"
        for file in scanned_files()
        for number, line in enumerate(file.read_text(errors="replace").splitlines(), 1)
        if EXTERNAL_SPECS.search(line)
    ]
    assert not hits, "cite docs/design.md (or the paper) instead:\n" + "\n".join(hits)


def test_every_cited_design_section_exists():
    design = (ROOT / "docs" / "design.md").read_text()
    anchors = {github_anchor(line.lstrip("#")) for line in design.splitlines() if line.startswith("#")}
    cited = {
        (anchor, f"{file.relative_to(ROOT)}:{number}")
        for file in scanned_files()
        for number, line in enumerate(file.read_text(errors="replace").splitlines(), 1)
        for anchor in DESIGN_ANCHOR.findall(line)
    }
    assert len(cited) > 20  # the package's docstrings do cite it
    missing = sorted(f"{where}: #{anchor}" for anchor, where in cited if anchor not in anchors)
    assert not missing, f"no such section in docs/design.md (sections: {sorted(anchors)}):\n" + "\n".join(missing)


def test_github_anchor_rules():
    assert github_anchor(" The vision tower as a `PreTrainedModel`") == "the-vision-tower-as-a-pretrainedmodel"
    assert github_anchor("Configuration, presets, loading") == "configuration-presets-loading"


def test_readme_links_the_design_document():
    assert "](docs/design.md)" in (ROOT / "README.md").read_text()
