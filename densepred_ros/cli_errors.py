"""The error policy of every `densepred` command.

* A user mistake or a bad input file: the command raises `UserError(what, subject)` at the
  place where the path or value is known; `run_command` prints one line
  `densepred <command>: error: <what> (<subject>)` on stderr and returns `EXIT_USER` (2).
* A bug: any other exception keeps its traceback (exit 1, Python's own behaviour).
* `--debug` or `DENSEPRED_DEBUG=1`: the traceback is printed for user errors too.
* A full disk (ENOSPC, EDQUOT) anywhere is a user error (exit 2) naming the file.
* Ctrl-C: one line `densepred <command>: interrupted` (plus the notes attached to the
  `KeyboardInterrupt`, e.g. where to resume) and `EXIT_INTERRUPTED` (130).
  Files written through `output_file` never exist half-written under their final name.

A new command uses it like this::

    from densepred_ros.cli_errors import output_file, run_command, UserError

    def run(args):
        if not Path(args.bag).exists():
            raise UserError('bag not found', args.bag)
        with output_file(Path(args.output) / 'depth.npy') as tmp:
            np.save(tmp, depth)

    sys.exit(run_command('bag', run, args))   # or registered in densepred_ros.cli
"""

import argparse
import contextlib
import errno
import os
from pathlib import Path
import sys
import traceback
from typing import Callable, Iterator, Optional, Type

EXIT_OK = 0
EXIT_BUG = 1
EXIT_USER = 2
EXIT_INTERRUPTED = 130
DEBUG_ENV = 'DENSEPRED_DEBUG'
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
PARTIAL_SUFFIX = '.partial'


class UserError(Exception):
    """A mistake of the user or a bad input: reported in one line, exit code 2.

    Attributes:
        what: what is wrong, in words ('not an image', 'cannot write: Permission denied').
        subject: the path or value concerned (None when there is none).
    """

    def __init__(self, what: str, subject: object = None) -> None:
        super().__init__(what if subject is None else f'{what} ({subject})')
        self.what = what
        self.subject = subject

    def line(self, command: str) -> str:
        """Return the one-line report `densepred <command>: error: <what> (<subject>)`."""
        return f'densepred {command}: error: {self}'


def debug_requested(flag: bool = False) -> bool:
    """Return True when tracebacks are wanted: `--debug` or DENSEPRED_DEBUG set, not 0."""
    value = os.environ.get(DEBUG_ENV, '').strip().lower()
    return bool(flag) or value not in ('', '0', 'false', 'no', 'off')


def os_error(exc: OSError, action: str, path: object = None) -> UserError:
    """Return the UserError for an OSError met while `action` ('read', 'write') on `path`."""
    reason = exc.strerror or type(exc).__name__
    subject = path if path is not None else (exc.filename or 'file unknown: run with --debug')
    return UserError(f'cannot {action}: {reason}', subject)


@contextlib.contextmanager
def user_errors(*types: Type[BaseException], subject: object = None,
                what: Optional[str] = None) -> Iterator[None]:
    """Turn the listed exception types into a UserError about `subject`.

    Use it around a call whose failures of these types can only mean bad input (loading
    a user's checkpoint, parsing a user's value), never around computation.
    """
    try:
        yield
    except UserError:
        raise
    except types as exc:
        raise UserError(what or _one_line(exc), subject) from exc


@contextlib.contextmanager
def output_file(path: os.PathLike) -> Iterator[Path]:
    """Yield a temporary name next to `path`; rename it to `path` when the block succeeds.

    If the block fails or is interrupted the temporary file is removed, so a file under
    its final name is always complete. An OSError (unwritable folder, full disk) becomes a
    UserError naming `path`. The temporary name keeps the suffix of `path` (np.save and PIL
    choose the format from it): `.<name>.partial<suffix>`.
    """
    path = Path(path)
    tmp = path.with_name(f'.{path.stem}{PARTIAL_SUFFIX}{path.suffix}')
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise os_error(exc, 'write', path) from exc
    except BaseException:
        _remove(tmp)
        raise


def make_folder(path: os.PathLike) -> Path:
    """Create the output folder `path` (and parents); a UserError if it cannot be."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, 'create the folder', path) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError('cannot write: Permission denied', path)
    return path


def run_command(name: str, func: Callable[[argparse.Namespace], Optional[int]],
                args: argparse.Namespace, debug: Optional[bool] = None) -> int:
    """Run `func(args)` under the error policy; return the exit code.

    Args:
        name: the subcommand as the user typed it ('predict', 'bag').
        func: the command; returns an exit code (None = 0) or raises.
        args: its parsed arguments (`args.debug` is read when `debug` is None).
        debug: print tracebacks for user errors too (default: --debug or DENSEPRED_DEBUG).
    """
    if debug is None:
        debug = getattr(args, 'debug', False)
    debug = debug_requested(debug)
    try:
        return int(func(args) or 0)
    except UserError as exc:
        return _report(name, exc, debug)
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        return _report(name, os_error(exc, 'write'), debug)
    except KeyboardInterrupt as exc:
        if debug:
            traceback.print_exc()
        notes = '; '.join(getattr(exc, '__notes__', ()))
        print(f'densepred {name}: interrupted' + (f'; {notes}' if notes else ''),
              file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED


def _report(name: str, exc: UserError, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(exc.line(name), file=sys.stderr, flush=True)
    return EXIT_USER


def _one_line(exc: BaseException) -> str:
    return ' '.join(str(exc).split()) or type(exc).__name__


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
