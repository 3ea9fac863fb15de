"""The environment is read in one module, and every variable it reads is documented."""

import re
from pathlib import Path

from curatornet_pipeline import settings

PACKAGE = Path(settings.__file__).parent
NAME = re.compile(r"\bCURATORNET_[A-Z][A-Z0-9_]*\b")
READ = re.compile(r"""(environ\.get\(|getenv\(|environ\[)\s*f?["']CURATORNET_""")
WRITE = re.compile(r"""environ\[\s*f?["']CURATORNET_[^\]]*\]\s*=(?!=)""")


def _sources() -> dict[Path, str]:
    return {p: p.read_text() for p in PACKAGE.rglob("*.py")}


def test_every_variable_the_package_names_is_listed() -> None:
    named = {m for text in _sources().values() for m in NAME.findall(text)}
    assert named - set(settings.VARIABLES) == set()
    assert set(settings.VARIABLES) - named == set()  # no listed variable that nothing uses


def test_only_the_settings_module_reads_project_variables() -> None:
    readers = [
        f"{p.relative_to(PACKAGE)}: {line.strip()}"
        for p, text in _sources().items()
        if p.name != "settings.py"
        for line in text.splitlines()
        if READ.search(line) and not WRITE.search(line)  # setting one for a child is fine
    ]
    assert readers == []


def test_the_operations_table_lists_exactly_the_variables() -> None:
    doc = (PACKAGE.parent / "docs" / "operations.md").read_text()
    table = doc[doc.index("## Environment variables") :]
    rows = set(re.findall(r"^\| `(CURATORNET_[A-Z0-9_]+)` \|", table, re.M))
    assert rows == set(settings.VARIABLES)


def test_an_unlisted_name_is_refused() -> None:
    try:
        settings.env("CURATORNET_NOT_A_VARIABLE")
    except KeyError as exc:
        assert "settings.VARIABLES" in str(exc)
    else:
        raise AssertionError("an unlisted variable was read")
