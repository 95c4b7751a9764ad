"""The package runs on Python 3.10 (ROS 2 Humble, Ubuntu 22.04): vermin's static check."""

from pathlib import Path
import subprocess
import sys

import pytest

pytest.importorskip('vermin', reason='vermin not installed')
ROOT = Path(__file__).resolve().parents[1]
SOURCES = [str(ROOT / p) for p in ('densepred_ros', 'launch', 'scripts', 'test', 'setup.py')]
RUN = 'import sys, vermin; sys.exit(vermin.main())'


def _vermin(*paths: str) -> subprocess.CompletedProcess:
    # --eval-annotations: `X | None` in annotations counts; -t=3.10-: fail above 3.10.
    return subprocess.run(
        [sys.executable, '-c', RUN, '--no-tips', '--eval-annotations', '--violations',
         '--processes', '1', '-t=3.10-', *paths],
        capture_output=True, text=True, timeout=300)


def test_sources_need_at_most_python_3_10():
    result = _vermin(*SOURCES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_check_flags_python_3_11_code(tmp_path):
    source = tmp_path / 'newer.py'
    source.write_text('import tomllib\n\n\ndef f():\n    return tomllib\n')
    result = _vermin(str(source))
    assert result.returncode != 0 and 'tomllib' in result.stdout, result.stdout
