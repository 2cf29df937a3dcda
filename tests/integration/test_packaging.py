"""The package as pip builds and installs it, and the versions it pins.

The wheel is built offline (``--no-index --no-build-isolation``: this
environment's setuptools, a test extra, is the build backend) from exactly
the files C{docker/Dockerfile} copies into the image, so a file the build
needs that the image leaves out fails here as well. The wheel must hold
every module and data file of the package (the Lua scripts the Redis store
loads included) and the twistd plugin, with no warning from setuptools about
a directory missing from ``packages``. Installed as a regular (not editable)
package in a scratch environment without the checkout on the path, the store
must still find its scripts and C{twistd privydrop --help} must work.

The version rules of C{setup.py}: every requirement has a lower and an upper
bound, and C{constraints.txt} pins each one inside its bounds.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "Dockerfile"
CONSTRAINTS = REPO / "constraints.txt"
DIST_INFO = "privydrop_signaling-0.1.0.dist-info"

#: What the image build leaves out of what it copies (see .dockerignore).
NOT_COPIED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "dropin.cache")

#: setuptools' warning about a directory that is importable but not in
#: ``packages`` (its files would be left out), in the wordings of the
#: versions the bounds allow.
ABSENT_PACKAGE_WARNINGS = ("absent from the `packages` configuration", "as data is deprecated")


def dockerfile_copies() -> list[tuple[list[str], str]]:
    """The C{COPY} instructions of the Dockerfile: (sources, destination)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    copies = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0].upper() == "COPY":
            paths = [w for w in words[1:] if not w.startswith("--")]
            copies.append((paths[:-1], paths[-1]))
    return copies


def docker_context(into: Path) -> Path:
    """Copy what the Dockerfile copies into its work directory to C{into}."""
    for sources, destination in dockerfile_copies():
        for source in sources:
            target = into / destination
            if destination.endswith("/") or len(sources) > 1:
                target = target / Path(source).name
            if (REPO / source).is_dir():
                shutil.copytree(REPO / source, target, ignore=NOT_COPIED)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / source, target)
    return into


class Built:
    """A wheel built from the Docker build context, and what pip printed."""

    def __init__(self, context: Path, wheel: Path, output: str) -> None:
        self.context = context
        self.wheel = wheel
        self.output = output
        with zipfile.ZipFile(wheel) as archive:
            self.names = set(archive.namelist())
            self.metadata = Parser().parsestr(archive.read(f"{DIST_INFO}/METADATA").decode())

    def requirements(self) -> list[Requirement]:
        return [Requirement(line) for line in self.metadata.get_all("Requires-Dist") or []]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("packaging")
    context = docker_context(root / "context")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "--no-build-isolation",
         "--check-build-dependencies", "--disable-pip-version-check", "--verbose",
         "--wheel-dir", str(root / "dist"), str(context)],
        cwd=root, capture_output=True, text=True, timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    (wheel,) = (root / "dist").glob("*.whl")
    return Built(context, wheel, output)


def test_the_build_does_not_warn_about_directories_left_out_of_packages(built: Built) -> None:
    """A data directory missing from ``packages`` makes setuptools warn (and
    some versions drop its files); the build prints no such warning."""
    assert "Building wheel" in built.output or "Created wheel" in built.output, built.output[-2000:]
    for warning in ABSENT_PACKAGE_WARNINGS:
        assert warning not in built.output, built.output[-4000:]


def test_the_wheel_holds_the_lua_scripts(built: Built) -> None:
    scripts = sorted(p.relative_to(built.context).as_posix()
                     for p in (built.context / "privydrop" / "store" / "scripts").glob("*.lua"))
    assert len(scripts) >= 7
    assert set(scripts) <= built.names, sorted(set(scripts) - built.names)


def test_the_wheel_holds_every_file_of_the_package_and_the_plugin(built: Built) -> None:
    """Every module and data file under privydrop/ is shipped (a new folder
    without C{__init__.py}, or a new kind of data file, would be left out
    silently); so is the twistd plugin, and nothing but these."""
    files = {p.relative_to(built.context).as_posix()
             for p in (built.context / "privydrop").rglob("*") if p.is_file()}
    assert "privydrop/py.typed" in files
    assert files <= built.names, sorted(files - built.names)
    assert "twisted/plugins/privydrop_plugin.py" in built.names
    assert "twisted/plugins/__init__.py" not in built.names  # Twisted's own, never ours
    assert {name.split("/")[0] for name in built.names} == {"privydrop", "twisted", DIST_INFO}


def test_every_requirement_has_a_lower_and_an_upper_bound(built: Built) -> None:
    """setup.py's rule (its docstring): nothing unbounded, test and dev extras included."""
    requirements = built.requirements()
    assert {canonicalize_name(r.name) for r in requirements} >= {
        "twisted", "autobahn", "txredisapi", "klein", "treq", "werkzeug", "orjson", "pytest"}
    for requirement in requirements:
        operators = {spec.operator for spec in requirement.specifier}
        assert operators & {">=", ">", "~=", "=="}, f"no lower bound: {requirement}"
        assert operators & {"<", "<=", "~=", "=="}, f"no upper bound: {requirement}"


def locked_versions() -> dict[str, Version]:
    locked = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: not name==version: {line!r}"
            locked[canonicalize_name(name)] = Version(version)
    return locked


def test_the_lock_pins_every_requirement_inside_its_bounds(built: Built) -> None:
    """constraints.txt and setup.py agree: run scripts/lock after moving a bound."""
    locked = locked_versions()
    checked = 0
    for requirement in built.requirements():
        extras = ("", "test", "dev")
        if requirement.marker and not any(requirement.marker.evaluate({"extra": e}) for e in extras):
            continue  # e.g. wsaccel off CPython
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement.name} is not in constraints.txt; run scripts/lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"constraints.txt pins {requirement.name}=={locked[name]}, outside {requirement}; "
            "run scripts/lock")
        checked += 1
    assert checked >= 9
    build_system = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]
    for line in build_system["requires"]:
        requirement = Requirement(line)
        assert requirement.specifier.contains(locked[canonicalize_name(requirement.name)])


def test_the_image_installs_the_locked_versions() -> None:
    """docker/Dockerfile copies constraints.txt and installs with it."""
    copied = {Path(source).name for sources, _ in dockerfile_copies() for source in sources}
    assert {"constraints.txt", "setup.py", "pyproject.toml"} <= copied
    installs = [line for line in re.sub(r"\\\n", " ", DOCKERFILE.read_text()).splitlines()
                if line.startswith("RUN") and " install " in line]
    assert installs
    for line in installs:
        for command in line.split("&&"):
            if "pip install" in command:
                assert "-c constraints.txt" in command, command


@pytest.fixture(scope="module")
def installed_python(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch Python environment with the wheel installed as a regular package.

    The dependencies come from this test environment's site-packages, added
    as a plain path: the ``.pth`` files there (the editable install, the
    checkout) are not read, so the checkout's C{privydrop} is out of reach.
    """
    root = tmp_path_factory.mktemp("installed")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")],
                   check=True, timeout=60)
    python = root / "venv" / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True, timeout=30).stdout.strip()
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
                    "--disable-pip-version-check", "--target", site, str(built.wheel)],
                   check=True, timeout=60)
    ours = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    Path(site, "test-dependencies.pth").write_text("".join(f"{p}\n" for p in ours))
    return python


def run_installed(python: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run the scratch environment away from the checkout (cwd and PYTHONPATH)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run([str(python), *argv], cwd=python.parent, env=env,
                          capture_output=True, text=True, timeout=60)


def test_the_installed_package_finds_its_lua_scripts(installed_python: Path) -> None:
    """The Redis store reads its scripts with importlib.resources when imported."""
    result = run_installed(installed_python, "-c", (
        "import importlib.resources, json, privydrop, privydrop.store.redis as store\n"
        "folder = importlib.resources.files('privydrop.store') / 'scripts'\n"
        "print(json.dumps({'package': privydrop.__file__,\n"
        "                  'files': sorted(p.name for p in folder.iterdir()),\n"
        "                  'loaded': {s.name: s.source.decode() for s in store.ALL_SCRIPTS}}))\n"))
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout)
    assert not Path(found["package"]).is_relative_to(REPO), found["package"]
    folder = REPO / "privydrop" / "store" / "scripts"
    assert found["files"] == sorted(p.name for p in folder.glob("*.lua"))
    assert found["loaded"]
    for name, source in found["loaded"].items():
        assert source.endswith((folder / f"{name}.lua").read_text()), name


def test_twistd_finds_the_installed_plugin(installed_python: Path) -> None:
    result = run_installed(installed_python, "-c", "from twisted.scripts.twistd import run; run()",
                           "privydrop", "--help")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "--listen" in result.stdout and "--redis" in result.stdout
