"""What users run never depends on what only the tests run.

kemi/, esl/ and provisioning/ are the product; lab/ (the stand-ins for Meta, the Graph API and
FreeSWITCH's Event Socket, the EdgeLab harness), tests/ and bench/ are not, and may be absent
from a user's install. Every import statement in the product, wherever it sits (module top,
function body, TYPE_CHECKING block), is read with ast, so a lazy `from lab... import` inside a
command fails here rather than on a user's machine.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("kemi", "esl", "provisioning", "siteconfig", "graphapi")
NOT_PRODUCT = ("lab", "tests", "bench")


def imported_modules(path: Path, package: str) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1]
                names.add(".".join([*base, node.module] if node.module else base))
            else:
                names.add(node.module or "")
    return names


def package_imports(root: Path, top: str) -> dict[str, set[str]]:
    """For each .py file under root/top (by path relative to root): the modules it imports."""
    found: dict[str, set[str]] = {}
    for path in sorted((root / top).rglob("*.py")):
        relative = path.relative_to(root)
        package = ".".join(relative.parent.parts)
        found[str(relative)] = imported_modules(path, package)
    return found


def top_level(name: str) -> str:
    return name.split(".", 1)[0]


def offenders(root: Path, top: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path}: {name}"
        for path, names in package_imports(root, top).items()
        for name in sorted(names)
        if top_level(name) in forbidden
    ]


@pytest.mark.parametrize("top", PRODUCT)
def test_product_never_imports_test_parties(top: str) -> None:
    assert package_imports(ROOT, top), f"no Python files under {top}/"
    assert offenders(ROOT, top, NOT_PRODUCT) == []


def test_kemi_needs_only_the_standard_library() -> None:
    """kemi/ runs in Kamailio's embedded system Python (Debian 3.11): no venv packages there."""
    allowed = set(sys.stdlib_module_names) | {"__future__", "kemi", "KSR"}
    foreign = [
        f"{path}: {name}"
        for path, names in package_imports(ROOT, "kemi").items()
        for name in sorted(names)
        if top_level(name) not in allowed
    ]
    assert foreign == []


def test_provisioning_and_esl_do_not_import_each_other() -> None:
    edges = {
        (top, top_level(name))
        for top in PRODUCT
        for names in package_imports(ROOT, top).values()
        for name in names
        if top_level(name) in PRODUCT and top_level(name) != top
    }
    assert not {("provisioning", "esl"), ("esl", "provisioning")} <= edges, sorted(edges)


def test_the_site_config_imports_neither_side() -> None:
    """siteconfig is what both sides read: it may import neither, or the cycle comes back."""
    assert offenders(ROOT, "siteconfig", ("esl", "provisioning", "kemi")) == []


def test_the_graph_client_imports_neither_side() -> None:
    """graphapi is the Graph client both sides use (provision, wa-esl's pre-flight)."""
    assert offenders(ROOT, "graphapi", ("esl", "provisioning", "kemi")) == []


def test_the_walk_finds_every_kind_of_import(tmp_path: Path) -> None:
    """The checks above are only as good as this walk: a lab import in any form is found."""
    package = tmp_path / "esl"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "top.py").write_text("import lab\n")
    (package / "lazy.py").write_text("def f() -> None:\n    from lab.esl_standin import X\n")
    (package / "guarded.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import tests.conftest\n"
    )
    (package / "sub" / "rel.py").write_text("from .. import wire\nfrom ..client import c\n")
    assert offenders(tmp_path, "esl", NOT_PRODUCT) == [
        "esl/guarded.py: tests.conftest",
        "esl/lazy.py: lab.esl_standin",
        "esl/top.py: lab",
    ]
    assert package_imports(tmp_path, "esl")["esl/sub/rel.py"] == {"esl", "esl.client"}
