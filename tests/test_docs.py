"""A fresh clone must stand alone: README and docs never point into the development machines' ../shared."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "benchmarks" / "configs").glob("*.yaml"))]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_reference_to_the_shared_folder(path):
    hits = [f"{path.name}:{i}: {line.strip()}" for i, line in enumerate(path.read_text().splitlines(), 1)
            if "../shared" in line or "shared/data/" in line]
    assert not hits, "name the public dataset (sc.datasets / spatialclust datasets path) instead of:\n" + "\n".join(hits)


def test_the_check_covers_readme_and_docs():
    names = {p.name for p in DOCS}
    assert {"README.md", "data_model.md", "cli.md"} <= names
