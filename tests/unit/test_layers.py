"""The layering of ARCHITECTURE.md, checked by reading every module's imports.

Lower layers never import upper ones; only the top (C{tap}, C{service}) reads
the environment or imports the global reactor. Imports inside functions count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "privydrop"

#: Modules allowed to read os.environ and import the global reactor.
TOP = {"privydrop.tap", "privydrop.service"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, tree: ast.Module) -> set[str]:
    """Every module name imported anywhere in the tree, resolved to absolute names."""
    found: set[str] = set()
    package = name if name.count(".") == 0 else name.rsplit(".", 1)[0]
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


ALL = modules()

#: (layer prefix, prefixes it must never import)
FORBIDDEN = [
    ("privydrop.engineio", ["privydrop.socketio", "privydrop.signaling", "privydrop.api",
                            "privydrop.web", "privydrop.service", "privydrop.tap",
                            "privydrop.store", "privydrop.rooms"]),
    ("privydrop.socketio", ["privydrop.signaling", "privydrop.api", "privydrop.web",
                            "privydrop.service", "privydrop.tap"]),
    ("privydrop.store", ["privydrop.rooms", "privydrop.ratelimit", "privydrop.tracking",
                         "privydrop.api", "privydrop.web", "privydrop.service", "privydrop.tap",
                         "privydrop.engineio", "privydrop.socketio", "privydrop.signaling",
                         "privydrop.adapter"]),
    ("privydrop.rooms", ["privydrop.api", "privydrop.web", "privydrop.service", "privydrop.tap",
                         "privydrop.engineio", "privydrop.socketio", "privydrop.signaling",
                         "privydrop.store.redis", "privydrop.store.memory",
                         "privydrop.store.service"]),
    ("privydrop.ratelimit", ["privydrop.api", "privydrop.web", "privydrop.service",
                             "privydrop.tap", "privydrop.engineio", "privydrop.socketio",
                             "privydrop.signaling", "privydrop.store.redis",
                             "privydrop.store.memory", "privydrop.store.service"]),
    ("privydrop.tracking", ["privydrop.api", "privydrop.web", "privydrop.service",
                            "privydrop.tap", "privydrop.engineio", "privydrop.socketio",
                            "privydrop.signaling", "privydrop.store.redis",
                            "privydrop.store.memory", "privydrop.store.service"]),
    ("privydrop.api", ["privydrop.engineio", "privydrop.socketio", "privydrop.signaling",
                       "privydrop.web", "privydrop.service", "privydrop.tap"]),
    ("privydrop.signaling", ["privydrop.api", "privydrop.web", "privydrop.service",
                             "privydrop.tap"]),
    ("privydrop.adapter", ["privydrop.signaling", "privydrop.api", "privydrop.web",
                           "privydrop.service", "privydrop.tap"]),
    ("privydrop.config", ["privydrop.store", "privydrop.rooms", "privydrop.api",
                          "privydrop.engineio", "privydrop.socketio", "privydrop.web"]),
    ("privydrop.clientip", ["privydrop"]),
    ("privydrop.origins", ["privydrop.api", "privydrop.web", "privydrop.engineio",
                           "privydrop.socketio"]),
]


def test_the_package_was_found() -> None:
    """The walk sees the modules it is meant to police (an empty walk proves nothing)."""
    assert {"privydrop.config", "privydrop.tap", "privydrop.store.interface"} <= set(ALL)


@pytest.mark.parametrize("layer, forbidden", FORBIDDEN, ids=[f[0] for f in FORBIDDEN])
def test_lower_layers_never_import_upper_ones(layer: str, forbidden: list[str]) -> None:
    """Each layer can be understood and tested without the ones above it."""
    offences = []
    for name, tree in ALL.items():
        if not within(name, layer):
            continue
        for imported in imports_of(name, tree):
            for bad in forbidden:
                # privydrop.clientip may import nothing of ours at all.
                if within(imported, bad) and not (bad == "privydrop" and imported == layer):
                    offences.append(f"{name} imports {imported}")
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
    readers = [name for name, tree in ALL.items() if name not in TOP and _reads_environment(tree)]
    assert readers == []


def test_only_the_top_imports_the_global_reactor() -> None:
    """Components take a reactor or clock, so tests can drive time instead of waiting."""
    importers = [
        name for name, tree in ALL.items()
        if name not in TOP and "twisted.internet.reactor" in imports_of(name, tree)
    ]
    assert importers == []


def test_import_walker_catches_a_violation() -> None:
    """The checks above would notice a function-level upward import."""
    tree = ast.parse("def f():\n    from privydrop.signaling import handlers\n    import os\n"
                     "    return os.environ['X']\n")
    assert "privydrop.signaling.handlers" in imports_of("privydrop.socketio.server", tree)
    assert _reads_environment(tree)
