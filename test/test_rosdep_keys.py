"""Every package.xml dependency resolves with rosdep on Humble, Jazzy and Kilted (offline).

test/data/rosdep_keys.txt records, for each key package.xml uses, where ros/rosdistro defines
it: a ROS package released in <distro>/distribution.yaml, or a key of rosdep/base.yaml or
rosdep/python.yaml with its Ubuntu rule. Regenerate it from a clone of ros/rosdistro:
    python test/test_rosdep_keys.py /path/to/rosdistro [commit]
With ROSDISTRO_GIT=/path/to/rosdistro set, a test regenerates it and compares.
"""

import datetime
import os
from pathlib import Path
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import pytest

ROOT = Path(__file__).resolve().parents[1]
KEYS_FILE = ROOT / 'test' / 'data' / 'rosdep_keys.txt'
DISTROS = ('humble', 'jazzy', 'kilted')
ROSDEP_FILES = ('rosdep/base.yaml', 'rosdep/python.yaml')
# Ubuntu releases of the three distros: Humble jammy, Jazzy and Kilted noble.
UBUNTU = ('jammy', 'noble')


def package_keys(path: Path = ROOT / 'package.xml') -> set:
    """Return the names in every *depend element of a package.xml."""
    root = ElementTree.parse(path).getroot()
    return {e.text.strip() for e in root if e.tag.endswith('depend')}


def read_keys_file(path: Path = KEYS_FILE) -> tuple:
    """Return (header lines, rows); a row is (key, where, file:line, evidence)."""
    header, rows = [], []
    for line in path.read_text().splitlines():
        if line.startswith('#'):
            header.append(line)
        elif line.strip():
            key, where, location, evidence = line.split(None, 3)
            rows.append((key, where, location, evidence))
    return header, rows


def _released_packages(distribution: dict) -> dict:
    """Map package name -> (repository, release version) in a distribution.yaml."""
    packages = {}
    for name, repo in distribution['repositories'].items():
        release = repo.get('release')
        if not release or 'version' not in release:
            continue
        for package in release.get('packages', [name]):
            packages[package] = (name, release['version'])
    return packages


def _line_of(text: str, prefix: str) -> int:
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith(prefix):
            return number
    raise KeyError(prefix)


def collect(git_dir: str, commit: str, keys: set) -> list:
    """Look every key up in ros/rosdistro at commit; return the keys file's lines."""
    import yaml

    def show(name):
        return subprocess.run(['git', '-C', git_dir, 'show', f'{commit}:{name}'],
                              check=True, capture_output=True, text=True).stdout

    sha, date = subprocess.run(
        ['git', '-C', git_dir, 'log', '-1', '--format=%H %cs', commit],
        check=True, capture_output=True, text=True).stdout.split()
    lines = [
        '# Keys package.xml uses, as ros/rosdistro defines them (test/test_rosdep_keys.py).',
        f'# source: https://github.com/ros/rosdistro commit {sha} ({date})',
        f'# files: {" ".join(ROSDEP_FILES)} '
        + ' '.join(f'{d}/distribution.yaml' for d in DISTROS),
        '# key  where  file:line  evidence',
    ]
    rules = {}
    for name in ROSDEP_FILES:
        text = show(name)
        for key, rule in yaml.safe_load(text).items():
            if key in keys:
                rules[key] = (name, _line_of(text, f'{key}:'), rule)
    for key in sorted(keys):
        if key in rules:
            name, line, rule = rules[key]
            resolved = ' '.join(f'{c}: {_flow(_ubuntu_rule(rule, c))}' for c in UBUNTU)
            lines.append(f'{key} rosdep {name}:{line} {resolved}')
    for distro in DISTROS:
        text = show(f'{distro}/distribution.yaml')
        released = _released_packages(yaml.safe_load(text))
        for key in sorted(keys - set(rules)):
            if key in released:
                repo, version = released[key]
                line = _line_of(text, f'  {repo}:')
                lines.append(f'{key} {distro} {distro}/distribution.yaml:{line} '
                             f'repository {repo}, release {version}')
    return lines


def _ubuntu_rule(rule: dict, codename: str):
    """Return what rosdep installs for a key on an Ubuntu release (None: nothing)."""
    rule = rule.get('ubuntu', rule.get('*'))
    if isinstance(rule, dict) and not {'apt', 'pip', 'source', 'packages'} & set(rule):
        rule = rule.get(codename, rule.get('*'))
    return rule


def _flow(value) -> str:
    import yaml
    return yaml.safe_dump(value, default_flow_style=True, width=10000).strip()


def test_keys_file_names_its_source():
    header, _ = read_keys_file()
    source = [line for line in header if line.startswith('# source:')]
    assert len(source) == 1
    words = source[0].split()
    assert words[2] == 'https://github.com/ros/rosdistro' and words[3] == 'commit'
    assert len(words[4]) == 40 and int(words[4], 16) >= 0
    datetime.date.fromisoformat(words[5].strip('()'))


def test_keys_file_lists_only_keys_package_xml_uses():
    _, rows = read_keys_file()
    assert {row[0] for row in rows} <= package_keys()


@pytest.mark.parametrize('key', sorted(package_keys()))
def test_key_resolves_on_every_distro(key):
    _, rows = read_keys_file()
    found = {row[1]: row for row in rows if row[0] == key}
    if 'rosdep' in found:
        key_, where, location, evidence = found['rosdep']
        assert location.split(':')[0] in ROSDEP_FILES
        # A rule null (or absent) on an Ubuntu release would fail rosdep there.
        for codename in UBUNTU:
            assert f'{codename}: ' in evidence, evidence
        assert 'null' not in evidence, evidence
        return
    missing = [d for d in DISTROS if d not in found]
    assert not missing, f'{key} is neither a rosdep key nor released in {missing}'


def test_removed_keys_stay_removed():
    # Reported by issue 12/20: not a Jazzy package / not a rosdep key / Ubuntu's old torch.
    removed = {'rclpy_lifecycle', 'python3-diffusers-pip', 'python3-safetensors-pip',
               'python3-torch'}
    assert not package_keys() & removed


@pytest.mark.skipif(not os.environ.get('ROSDISTRO_GIT'),
                    reason='set ROSDISTRO_GIT to a clone of ros/rosdistro to re-check the list')
def test_keys_file_matches_rosdistro():
    pytest.importorskip('yaml')
    header, _ = read_keys_file()
    commit = next(h for h in header if h.startswith('# source:')).split()[4]
    expected = collect(os.environ['ROSDISTRO_GIT'], commit, package_keys())
    assert KEYS_FILE.read_text().splitlines() == expected


if __name__ == '__main__':
    lines = collect(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else 'HEAD', package_keys())
    KEYS_FILE.parent.mkdir(exist_ok=True)
    KEYS_FILE.write_text('\n'.join(lines) + '\n')
    print('\n'.join(lines))
