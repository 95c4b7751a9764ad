"""ament_flake8 (ament's style: flake8 with import order, quotes, docstrings plugins)."""

from pathlib import Path
import subprocess
import sys

import pytest

pytest.importorskip('ament_flake8.main', reason='ament_flake8 not installed')
ROOT = Path(__file__).resolve().parents[1]
SOURCES = [str(ROOT / p) for p in ('densepred_ros', 'test', 'launch', 'scripts', 'setup.py')
           if (ROOT / p).exists()]
# flake8 forks worker processes; forking this test process, which holds rclpy and torch
# threads from earlier tests, crashed them, so the check runs in a fresh interpreter.
RUN = ('import sys\n'
       'from ament_flake8.main import main_with_errors\n'
       'rc, errors = main_with_errors(argv=sys.argv[1:])\n'
       'sys.exit(1 if rc else 0)\n')


@pytest.mark.flake8
@pytest.mark.linter
def test_flake8():
    result = subprocess.run([sys.executable, '-c', RUN, *SOURCES], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
