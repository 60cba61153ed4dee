"""The library stays free of the webui: only lib_dumpunet/webui/ may import `modules.*` or gradio."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "lib_dumpunet"
HOST_ONLY = {"modules", "gradio", "launch", "ldm", "sgm"}


def _library_files() -> list[Path]:
    return [p for p in LIBRARY.rglob("*.py") if "webui" not in p.relative_to(LIBRARY).parts]


def test_library_source_never_imports_the_host():
    offenders = []
    for path in _library_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n.split(".")[0] in HOST_ONLY]
    assert offenders == []


def test_importing_the_library_loads_no_host_module():
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for p in _library_files()
    )
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(HOST_ONLY)!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert len(modules) >= 4


def test_no_eval_or_exec_in_shipped_code():
    calls = []
    for path in [*LIBRARY.rglob("*.py"), *(ROOT / "scripts").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in {"eval", "exec"}:
                calls.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert calls == []
