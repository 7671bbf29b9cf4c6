"""The README's quickstart test command is exactly what CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(python3\.11 -m venv[^\n]*)\n```", readme)
    assert len(commands) == 2, commands  # install-and-run, install-and-test
    test_command = commands[1]
    assert test_command.endswith("pytest")
    assert test_command in (ROOT / ".ci" / "run").read_text()
