"""The package layout the redesign promised, checked in seconds and without Ray.

- the layering contract in setup.cfg (``data < trainers < evaluation < tuning < distill <
  cluster < shardtune``) is kept;
- first-party imports are made at module level: an import inside a function hides a cycle or a
  dependency, except where ``LOCAL_IMPORTS_ALLOWED`` says why;
- no module is over ``MAX_LINES`` lines;
- each package's ``__init__`` docstring says what the package may import;
- ``import shardtune.cli`` loads no torch (it imports each verb's package when the verb runs).

Each check is also run on a planted violation, so a check that stopped detecting would fail.
"""

from __future__ import annotations

import ast
import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("data", "trainers", "evaluation", "tuning", "distill", "cluster", "shardtune")
MAX_LINES = 420
# module (path from the repository root) → why its functions may import first-party modules
LOCAL_IMPORTS_ALLOWED = {
    "shardtune/cli.py": "lazy verb dispatch: `shardtune --help` and a mistyped key answer without "
                        "importing torch, transformers and Ray (see its module docstring)",
}


def modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def local_imports(path: Path) -> list[str]:
    """``file:line`` of each first-party (or relative) import made inside a function."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for func in ast.walk(tree):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(func):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = ["." if node.level else node.module or ""]
            else:
                continue
            if any(n == "." or n.split(".")[0] in PACKAGES for n in names):
                found.append(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"
                             f":{node.lineno}: {ast.unparse(node)}")
    return sorted(set(found))


def too_long(path: Path) -> int | None:
    lines = len(path.read_text().splitlines())
    return lines if lines > MAX_LINES else None


def init_problem(init: Path) -> str | None:
    """Why a package's ``__init__`` docstring falls short, or None."""
    doc = ast.get_docstring(ast.parse(init.read_text()))
    if not doc:
        return "no docstring"
    if "May import:" not in doc:
        return "its docstring does not say what the package may import ('May import: ...')"
    return None


def lint_imports(cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    tool = Path(sys.executable).parent / "lint-imports"
    return subprocess.run([str(tool)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_layering_contract_is_kept():
    done = lint_imports(ROOT)
    assert done.returncode == 0 and "0 broken" in done.stdout, done.stdout + done.stderr


def test_the_contract_check_fails_on_an_upward_import(tmp_path):
    """The same contract on a two-package tree where ``data`` imports ``trainers``."""
    real = configparser.ConfigParser()
    real.read(ROOT / "setup.cfg")
    cfg = configparser.ConfigParser()
    for section in (s for s in real.sections() if s.startswith("importlinter")):
        cfg[section] = dict(real[section])
    with (tmp_path / "setup.cfg").open("w") as f:
        cfg.write(f)
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "data" / "up.py").write_text("import trainers\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = lint_imports(tmp_path, env)
    assert done.returncode != 0 and "BROKEN" in done.stdout, done.stdout + done.stderr


def test_first_party_imports_are_at_module_level():
    found = [hit for path in modules() if str(path.relative_to(ROOT)) not in
             LOCAL_IMPORTS_ALLOWED for hit in local_imports(path)]
    assert not found, ("first-party imports inside functions (move them to module level; a "
                       "cycle means a function belongs in another module):\n" + "\n".join(found))


def test_every_allowed_local_import_is_still_needed_and_says_why():
    for module, reason in LOCAL_IMPORTS_ALLOWED.items():
        assert reason.strip(), module
        assert local_imports(ROOT / module), f"{module} no longer needs its allow-list entry"


def test_the_local_import_check_finds_one(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("import json\n\n\ndef f():\n    import numpy\n    from data.errors import "
                       "ConfigError\n    from . import sibling\n    return json, numpy\n")
    assert [hit.split(": ", 1)[0].rsplit(":", 1)[1] for hit in local_imports(planted)] == \
        ["6", "7"]


def test_no_module_is_over_the_line_limit():
    found = {str(p.relative_to(ROOT)): n for p in modules() if (n := too_long(p))}
    assert not found, f"modules over {MAX_LINES} lines (split along a real seam): {found}"


def test_the_line_limit_check_finds_one(tmp_path):
    planted = tmp_path / "long.py"
    planted.write_text("x = 1\n" * (MAX_LINES + 1))
    assert too_long(planted) == MAX_LINES + 1
    planted.write_text("x = 1\n" * MAX_LINES)
    assert too_long(planted) is None


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_says_what_it_owns_and_may_import(package):
    assert init_problem(ROOT / package / "__init__.py") is None, init_problem(
        ROOT / package / "__init__.py")


def test_the_package_docstring_check_finds_one(tmp_path):
    init = tmp_path / "__init__.py"
    init.write_text('"""Training recipes and the one shared loop (see trainers/loop.py)."""\n')
    assert init_problem(init) is not None
    init.write_text("")
    assert init_problem(init) == "no docstring"


def test_the_cli_imports_without_torch():
    code = ("import sys, shardtune.cli; "
            "print(sorted({'torch', 'transformers', 'ray'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
