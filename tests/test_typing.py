"""mypy in strict mode over fleet's packages (the files pyproject.toml's [tool.mypy] names),
run as one of the tests so that it shares the workers' time instead of running before them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_packages_type_check_in_strict_mode() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=900, check=False
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-8000:]
    assert "Success: no issues found" in done.stdout, done.stdout[-2000:]
