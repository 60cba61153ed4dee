"""The project's own promises about how it is set up and tested."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _readme_test_command() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- test-command -->\s*```(?:bash|sh)?\n(.*?)```", readme, re.S)
    assert block, "README.md marks its test command with <!-- test-command -->"
    return block.group(1)


def test_ci_runs_the_readme_command_and_fails_on_no_tests():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "<!-- test-command -->" in ci, ".ci/run takes its command from the README"
    assert re.search(r"\b5\b", ci), ".ci/run treats pytest exit 5 (no tests collected) as failure"


def test_readme_command_installs_cpu_torch_first_and_the_real_ldm():
    cmd = _readme_test_command()
    torch_at = cmd.index("pip install torch==2.13.0")
    assert torch_at < cmd.index(".[test]") < cmd.index("pytest")
    assert "pip install --no-deps stable-diffusion-sdkit==2.1.5 open-clip-torch==2.20.0" in cmd


def test_no_requirement_can_pull_another_torch():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = list(meta["dependencies"]) + [r for extra in meta["optional-dependencies"].values() for r in extra]
    torch_reqs = [r for r in reqs if re.match(r"torch\b(?![-_\w])", r)]
    assert torch_reqs, "torch is declared"
    for req in torch_reqs:
        assert re.fullmatch(r"torch\s*>=\s*2\.\d+(\.\d+)?", req), f"{req!r} must be a floor that 2.13.0 satisfies"
