"""The import contracts of `.importlinter` hold, and break when an import crosses them."""

import os
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / 'lint-imports'


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run([str(LINT_IMPORTS), '--no-cache', str(root / '.importlinter')],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_contracts_hold():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert '0 broken' in result.stdout


@pytest.mark.parametrize('module, line, contract', [
    # A low layer importing a high one: the circle that models/ had before.
    ('models/checkpoint.py', 'from densepred_ros.models import lotus',
     'models: one chain'),
    ('models/backends/chain.py', 'from densepred_ros.models.backends import trt_runtime',
     'one file per concern'),
    ('camera.py', 'import rclpy', 'The core imports no rclpy'),
    ('models/base.py', 'from sensor_msgs.msg import Image', 'The core imports no rclpy'),
    ('alignment.py', 'import torch', 'import no torch'),
])
def test_a_crossing_import_breaks_its_contract(tmp_path, module, line, contract):
    shutil.copytree(ROOT / 'densepred_ros', tmp_path / 'densepred_ros',
                    ignore=shutil.ignore_patterns('__pycache__', 'demo_models', '*.json'))
    shutil.copy(ROOT / '.importlinter', tmp_path / '.importlinter')
    assert _lint(tmp_path).returncode == 0   # the copy alone keeps every contract
    target = tmp_path / 'densepred_ros' / module
    text = target.read_text()
    target.write_text(text + f'\n{line}  # noqa\n')
    result = _lint(tmp_path)
    assert result.returncode != 0
    verdicts = [row for row in result.stdout.splitlines() if contract in row]
    assert verdicts and ' BROKEN' in verdicts[0], result.stdout[-4000:]
    imported = line.split()[1]
    if not imported.startswith('densepred_ros'):
        imported = imported.split('.')[0]   # import-linter names external packages only
    assert imported in result.stdout   # the report names the offending import
