"""The layering of docs/architecture.md, checked by reading every module's imports.

The layer table lives in the project's own documentation; this test parses
it, so the document and the code cannot drift apart. A package may import
only packages of lower layers (and its own modules); only the top reads the
environment or imports the global reactor. Imports inside functions count.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "privydrop"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

#: Modules allowed to read os.environ: the two entry points (twistd's, and
#: the privydrop-admin console script's).
READS_ENVIRONMENT = {"privydrop.tap", "privydrop.admin.cli"}
#: Packages allowed to import the global reactor.
IMPORTS_REACTOR = ("privydrop.tap", "privydrop.service")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, tree: ast.Module, is_package: bool = False) -> set[str]:
    """Every module name imported anywhere in the tree, resolved to absolute names."""
    found: set[str] = set()
    package = name if is_package or "." not in name else name.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(base + "." + alias.name for alias in node.names)
    return found


def within(imported: str, prefix: str) -> bool:
    return imported == prefix or imported.startswith(prefix + ".")


def documented_layers(text: str) -> list[tuple[int, str]]:
    """The (layer, package) rows between the layer markers of architecture.md."""
    section = text.split("<!-- layers", 1)[1].split("<!-- /layers -->", 1)[0]
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*`([\w.]+)`\s*\|", section, re.MULTILINE)
    return [(int(layer), package) for layer, package in rows]


ALL = modules()
LAYERS = documented_layers(ARCHITECTURE.read_text())
RANK = {package: layer for layer, package in LAYERS}


def owner(module: str) -> str | None:
    """The documented package a module belongs to (None: not ours, or undocumented)."""
    best = None
    for package in RANK:
        if within(module, package) and (best is None or len(package) > len(best)):
            best = package
    return best


def test_the_package_and_the_table_were_found() -> None:
    """The walk sees the modules it is meant to police (an empty walk proves nothing)."""
    assert {"privydrop.settings", "privydrop.tap", "privydrop.store.interface"} <= set(ALL)
    assert len(LAYERS) >= 10
    assert sorted(layer for layer, _ in LAYERS) == [layer for layer, _ in LAYERS]


def test_every_module_belongs_to_a_documented_layer() -> None:
    """A new package gets a row in docs/architecture.md before it gets code."""
    orphans = [name for name in ALL if name != "privydrop" and owner(name) is None]
    assert orphans == []


@pytest.mark.parametrize("package", [p for _, p in LAYERS])
def test_packages_import_only_lower_layers(package: str) -> None:
    """Each layer can be understood and tested without the ones above it, and
    no two packages import each other."""
    offences = []
    for name, tree in ALL.items():
        if owner(name) != package:
            continue
        is_package = (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()
        for imported in imports_of(name, tree, is_package):
            if not within(imported, "privydrop") or imported == "privydrop":
                continue
            target = owner(imported)
            if target is None or target == package:
                continue
            if RANK[target] >= RANK[package]:
                offences.append(f"{name} imports {imported} (layer {RANK[target]})")
    assert offences == []


def _reads_environment(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "environb", "getenv"):
            if isinstance(node.value, ast.Name) and node.value.id == "os":
                return True
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            if any(a.name in ("environ", "environb", "getenv") for a in node.names):
                return True
    return False


def test_only_the_top_reads_the_environment() -> None:
    """Configuration is read once, so every component sees the same validated values."""
    readers = [
        name for name, tree in ALL.items()
        if name not in READS_ENVIRONMENT and _reads_environment(tree)
    ]
    assert readers == []


def test_only_the_top_imports_the_global_reactor() -> None:
    """Components take a reactor or clock, so tests can drive time instead of waiting."""
    importers = [
        name for name, tree in ALL.items()
        if not any(within(name, top) for top in IMPORTS_REACTOR)
        and "twisted.internet.reactor" in imports_of(name, tree)
    ]
    assert importers == []


def test_import_walker_catches_a_violation() -> None:
    """The checks above would notice a function-level upward import."""
    tree = ast.parse("def f():\n    from privydrop.signaling import handlers\n    import os\n"
                     "    return os.environ['X']\n")
    assert "privydrop.signaling.handlers" in imports_of("privydrop.socketio.server", tree)
    assert _reads_environment(tree)
    assert RANK[owner("privydrop.signaling.handlers") or ""] > RANK["privydrop.socketio"]
