"""The documented parameter table cannot drift from `params.PARAMETERS`; docs links resolve."""

from pathlib import Path
import re
from typing import Dict, List

from densepred_ros.params import PARAMETERS, ParameterSpec
import pytest

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / 'docs' / 'parameters.md'
ROW = re.compile(r'^\|\s*`([^`]+)`\s*\|\s*`([^`]*)`\s*\|([^|]*)\|(.*)\|\s*$')


def yaml_text(value) -> str:
    """Return how a default is written in the table (as in a YAML parameter file)."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, str):
        return value if value else "''"
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(yaml_text(item) for item in value) + ']'
    return repr(value)


def range_text(spec: ParameterSpec) -> str:
    """Return the range cell: 'low to high' for bounds, the choices comma separated, or ''."""
    if spec.bounds is not None:
        return f'{yaml_text(spec.bounds[0])} to {yaml_text(spec.bounds[1])}'
    if spec.choices is not None:
        return ', '.join(spec.choices)
    return ''


def expected_row(spec: ParameterSpec) -> str:
    """Return the row to paste (the meaning is for the author to write)."""
    return (f'| `{spec.name}` | `{yaml_text(spec.default)}` | {range_text(spec)} | '
            f'{spec.description} |')


def documented_rows(text: str) -> Dict[str, List[str]]:
    """Return {name: [default, range]} of the table rows in `text`; ValueError on repeats."""
    rows: Dict[str, List[str]] = {}
    for line in text.splitlines():
        match = ROW.match(line)
        if match:
            name, default, allowed = match.group(1), match.group(2), match.group(3).strip()
            if name in rows:
                raise ValueError(f'{TABLE.name}: parameter `{name}` has two rows')
            rows[name] = [default, allowed]
    return rows


def table_problems(text: str, specs) -> List[str]:
    """Return one line per difference between the table in `text` and `specs`."""
    rows = documented_rows(text)
    problems = []
    for spec in specs:
        if spec.name not in rows:
            problems.append(f'missing row for `{spec.name}`; add (meaning may be reworded):\n'
                            f'    {expected_row(spec)}')
            continue
        default, allowed = rows[spec.name]
        if default != yaml_text(spec.default):
            problems.append(f'stale default of `{spec.name}`: the table says `{default}`, '
                            f'params.PARAMETERS says `{yaml_text(spec.default)}`')
        if allowed != range_text(spec):
            problems.append(f'stale range of `{spec.name}`: the table says {allowed!r}, '
                            f'params.PARAMETERS says {range_text(spec)!r}')
    declared = {spec.name for spec in specs}
    for name in rows:
        if name not in declared:
            problems.append(f'row for `{name}`, which params.PARAMETERS does not declare: '
                            'remove it or rename it')
    return problems


def test_parameter_table_matches_the_declarations():
    problems = table_problems(TABLE.read_text(encoding='utf-8'), PARAMETERS)
    assert not problems, f'{TABLE.relative_to(ROOT)} vs params.PARAMETERS:\n' + '\n'.join(
        problems)


def test_the_check_catches_missing_stale_and_unknown_rows():
    """The table check itself: a removed row, a changed default and an extra row all fail."""
    text = TABLE.read_text(encoding='utf-8')
    first, second = PARAMETERS[0], PARAMETERS[1]
    lines = [line for line in text.splitlines() if not line.startswith(f'| `{first.name}`')]
    lines = [line.replace(f'`{yaml_text(second.default)}`', '`changed`', 1)
             if line.startswith(f'| `{second.name}`') else line for line in lines]
    lines.append('| `no.such_parameter` | `1` |  | invented |')
    problems = table_problems('\n'.join(lines), PARAMETERS)
    assert len(problems) == 3, problems
    assert problems[0].startswith(f'missing row for `{first.name}`')
    assert expected_row(first) in problems[0]
    assert problems[1].startswith(f'stale default of `{second.name}`')
    assert 'no.such_parameter' in problems[2]
    with pytest.raises(ValueError, match='two rows'):
        documented_rows(text + '\n' + expected_row(first))


def test_readme_is_short_and_its_links_resolve():
    readme = (ROOT / 'README.md').read_text(encoding='utf-8')
    assert len(readme.splitlines()) <= 220
    assert 'make demo' in readme and 'make test' in readme
    for document in [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]:
        for target in re.findall(r'\]\(([^)#:]+)(?:#[^)]*)?\)', document.read_text('utf-8')):
            assert (document.parent / target).exists(), f'{document.name}: broken link {target}'
