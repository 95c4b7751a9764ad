"""A short soak: 500 frames at 30 Hz with lidar into the node in its own process.

Runs ``scripts/soak.py`` (the full 10 000-frame run is ``make soak``) and checks what
does not depend on timing luck: no exception in the node's log, frames processed, every
frame the node received ended as processed, dropped, failed or skipped, nothing lost on
the reliable transport, resident memory growth after warm-up within 5 %, exit code 0.
How many frames are dropped depends on the machine, and is not checked.
"""

import json
from pathlib import Path
import subprocess
import sys

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 500


def test_short_soak(tmp_path) -> None:
    report_path = tmp_path / 'soak.json'
    command = [sys.executable, str(ROOT / 'scripts' / 'soak.py'), '--frames', str(FRAMES),
               '--rate', '30', '--json', str(report_path), '--log', str(tmp_path / 'node.log')]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=400)
    assert report_path.exists(), result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    log = (tmp_path / 'node.log').read_text()
    assert report['log_problems'] == {'tracebacks': 0, 'error_lines': 0,
                                      'exception_lines': 0}, log
    assert report['processed'] > 0
    assert report['published'] == FRAMES
    assert report['received'] == FRAMES  # reliable QoS, history deeper than any backlog
    bins = ('processed', 'dropped_overwritten', 'dropped_stale', 'decode_errors',
            'processing_errors', 'skipped_idle')
    assert sum(report[b] for b in bins) == report['received'], report
    assert report['processing_errors'] == 0 and report['decode_errors'] == 0
    assert report['outputs_received_here'] == report['processed']
    assert report['rss_growth_after_warmup'] <= 0.05, report['rss_kib']
    assert report['exit_code'] == 0, log
    assert all(report['checks'].values()), report['checks']
    assert result.returncode == 0, result.stderr
