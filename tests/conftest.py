"""The order in which the test files are handed to pytest-xdist's workers.

`make test` runs each file on one worker (`--dist loadfile`: a file's lab is shared by its
tests) and hands the files out in collection order (`--no-loadscope-reorder`). Handing out the
longest files first keeps one of them from starting last and leaving the other workers idle at
the end. The weights are each file's seconds in a whole run on 2 cores (`--durations=0`); a file
not named here is short and keeps its place after them. They only order the run: a wrong or
stale weight costs minutes, never a test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SECONDS = {
    "test_cli_habits.py": 200,
    "test_pr_comment.py": 180,
    "test_config_lab.py": 135,
    "test_suspend.py": 130,
    "test_controller.py": 125,
    "test_apply.py": 120,
    "test_reconcile.py": 110,
    "test_ipmi_provider.py": 75,
    "test_ansible_ssh.py": 73,
    "test_kube_lab.py": 65,
    "test_vm_lab.py": 60,
    "test_ship.py": 59,
    "test_engine.py": 56,
    "test_typing.py": 55,
    "test_replicas.py": 52,
    "test_validation_gate.py": 51,
    "test_cli.py": 41,
    "test_ui_browser.py": 38,
    "test_kube_upstream.py": 33,
    "test_ansible_provider.py": 32,
    "test_lab.py": 31,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first; a file's tests stay together and in their order."""
    items.sort(key=lambda item: -SECONDS.get(Path(str(item.path)).name, 0))
