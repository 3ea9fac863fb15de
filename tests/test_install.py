"""The reproducible install: one Dagster family, a constraints file make uses, and one
script that installs the Debian packages the tests need when they are missing."""

import importlib.metadata
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "install-system-deps.sh"
DAGSTER_CORE = (
    "dagster",
    "dagster-webserver",
    "dagster-graphql",
    "dagster-pipes",
    "dagster-shared",
)


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def _pyproject_pins() -> dict[str, str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return dict(
        m.groups() for d in deps if (m := re.fullmatch(r"([A-Za-z0-9_.-]+)==([^,;\s]+)", d))
    )


def test_one_dagster_family_pinned_exactly():
    pins = _pyproject_pins()
    family = {n: v for n, v in pins.items() if n.startswith("dagster")}
    assert set(DAGSTER_CORE) <= set(family), "every Dagster core package is pinned with =="
    core = {family[n] for n in DAGSTER_CORE}
    assert len(core) == 1, f"core packages disagree: {core}"
    (version,) = core
    minor_patch = version.split(".", 1)[1]  # 1.13.27 -> integrations 0.29.27
    for name, pin in family.items():
        if name not in DAGSTER_CORE:
            assert pin.split(".")[-1] == minor_patch.split(".")[-1], (name, pin, version)
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"


def test_constraints_agree_with_pyproject_and_the_installed_environment():
    constraints = _constraints()
    for name, version in _pyproject_pins().items():
        assert constraints[name.lower()] == version, name
    for name in constraints:
        if name.startswith("dagster"):
            assert importlib.metadata.version(name) == constraints[name], (
                f"{name} installed at {importlib.metadata.version(name)}, "
                f"constraints.txt says {constraints[name]}: run `make install`"
            )


def test_make_and_ci_use_the_constraints_and_the_shared_script():
    makefile = (REPO / "Makefile").read_text()
    assert "pip install --quiet -c constraints.txt -e '.[dev]'" in makefile
    test_rule = re.search(r"^test: (.*)$", makefile, re.M).group(1)
    assert "system-deps" in test_rule.split()
    assert "scripts/install-system-deps.sh" in makefile
    assert "scripts/install-system-deps.sh" in (REPO / ".ci" / "run").read_text()


def _fake_apt(tmp_path: Path) -> tuple[Path, Path]:
    """An ``apt-get`` (and ``sudo``) on PATH that records its arguments instead of installing."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "apt.log"
    (bindir / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    (bindir / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    for f in bindir.iterdir():
        f.chmod(0o755)
    return bindir, log


def test_install_script_installs_chromium_on_a_machine_without_it(tmp_path):
    bindir, log = _fake_apt(tmp_path)
    env = {
        **os.environ,
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "CHROMIUM_BIN": str(tmp_path / "no-chromium-here"),
    }
    result = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert calls[0].startswith("update")
    assert calls[1].split()[:2] == ["install", "-y"] and "chromium" in calls[1].split()


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs the real chromium")
def test_install_script_does_nothing_when_everything_is_there(tmp_path):
    bindir, log = _fake_apt(tmp_path)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    result = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert not log.exists()
