"""ament_flake8 (ament's style: flake8 with import order, quotes, docstrings plugins)."""

from pathlib import Path

import pytest

ament_flake8 = pytest.importorskip('ament_flake8.main', reason='ament_flake8 not installed')
ROOT = Path(__file__).resolve().parents[1]
SOURCES = [str(ROOT / p) for p in ('densepred_ros', 'test', 'launch', 'scripts', 'setup.py')
           if (ROOT / p).exists()]


@pytest.mark.flake8
@pytest.mark.linter
def test_flake8():
    rc, errors = ament_flake8.main_with_errors(argv=SOURCES)
    assert rc == 0, 'Found %d code style errors / warnings:\n' % len(errors) + '\n'.join(errors)
