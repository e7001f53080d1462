"""The import graph of ARCHITECTURE.md: service -> (encoder, index, gates); encoder, index and
gates never import service nor each other. Checked on the source, every import statement."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "encoder", "index", "gates")


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


@pytest.mark.parametrize("package", ["encoder", "index", "gates"])
def test_a_model_package_imports_no_other_package_of_facegate(package):
    wrong = {str(p.relative_to(ROOT)): sorted(imported_packages(p) - {package})
             for p in sorted((ROOT / package).rglob("*.py"))}
    assert {k: v for k, v in wrong.items() if v} == {}


def test_the_finder_sees_plain_from_and_function_level_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import encoder.align\nfrom index import knn_vote\n\ndef f():\n    from service.cli import main\n"
                 "from . import sibling\nimport numpy\n")
    assert imported_packages(f) == {"encoder", "index", "service"}
