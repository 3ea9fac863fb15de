"""docs/architecture.md's map of the package is the package: one row per module."""

import re
from pathlib import Path

import curatornet_pipeline

PACKAGE = Path(curatornet_pipeline.__file__).parent
DOC = PACKAGE.parent / "docs" / "architecture.md"


def test_the_map_lists_every_module_and_nothing_else() -> None:
    text = DOC.read_text()
    section = text[text.index("## Layers") : text.index("## Asset graph")]
    mapped = set(re.findall(r"^\| `([a-z_/]+\.py)` \|", section, re.M))
    modules = {
        str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"
    }
    assert sorted(modules - mapped) == [], "modules missing from the map"
    assert sorted(mapped - modules) == [], "rows for modules that do not exist"


def test_core_imports_no_orchestration() -> None:
    """core/ is what a notebook imports: no dagster, no mlflow, nothing of defs/."""
    offenders = [
        str(p.relative_to(PACKAGE))
        for p in (PACKAGE / "core").rglob("*.py")
        if re.search(
            r"^\s*(import|from) (dagster|mlflow|curatornet_pipeline\.defs)\b", p.read_text(), re.M
        )  # fmt: skip
    ]
    assert offenders == []
