"""Shared command-line helpers: logging, flags derived from the config dataclasses, one-line errors."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import logging
import math
import os
import re
import signal
import sys
import threading
import traceback
import typing
from typing import Any, Callable, Iterator, NoReturn

from app.errors import InputError

VERBOSE_HINT = " (run with --verbose for the traceback)"


def setup_logging(verbose: bool = False, tensorflow: bool = True) -> None:
    """Logs `HH:MM:SS level message` to stderr. TensorFlow's C++ start-up chatter (`Could not find
    cuda drivers`, `failed call to cuInit` on machines without a GPU, absl's warnings) is hidden
    unless `verbose`.

    Call it before TensorFlow is imported: it imports TensorFlow itself (when `tensorflow`) with
    the C-level stderr silenced, since that chatter is printed at import, before its log level
    applies.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "3")
    if tensorflow and not verbose:
        _import_tensorflow_quietly()
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("absl", "tensorflow", "h5py", "matplotlib", "PIL", "faiss"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose and noisy == "tensorflow" else logging.WARNING)


def _import_tensorflow_quietly() -> None:
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default in its help, except where there is none to show: a required flag,
    a default of None, a switch that is off."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.required or action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """Adds --verbose and --no-progress, and makes every flag that takes a value refuse to be given
    twice (`--manifest A --manifest B` would silently drop A), before or after this call."""
    parser.add_argument("--verbose", action="store_true", help="debug logs, TensorFlow's own logs and tracebacks")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (they are also off when stderr is not a terminal)")
    for name in (None, "store"):
        parser.register("action", name, StoreOnce)
    for action in parser._actions:
        if type(action) is argparse._StoreAction:
            action.__class__ = StoreOnce


class StoreOnce(argparse._StoreAction):
    """argparse's `store`, except that a flag given twice is a usage error, not the last value winning."""

    GIVEN = "_flags_given"  # the namespace attribute that notes the flags seen

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        given = namespace.__dict__.setdefault(self.GIVEN, set())
        if self.dest in given:
            parser.error(f"{option_string or self.dest} given twice: give it once (which value was meant?)")
        given.add(self.dest)
        super().__call__(parser, namespace, values, option_string)


def at_least(low: float, kind: type = int) -> Callable[[str], Any]:
    """An argparse `type`: a finite number of `kind` (int or float) of at least `low` (NaN and inf refused)."""
    def parse(text: str):
        wanted = f"expected {'a whole number' if kind is int else 'a finite number'} of at least {low}, got {text!r}"
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(wanted) from None
        if not (math.isfinite(value) and value >= low):
            raise argparse.ArgumentTypeError(wanted)
        return value
    return parse


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_flags(group, kind: type, section: str, names: list[str] | None = None,
                     defaults: Any = None) -> None:
    """Adds one flag per dataclass field, with the field's help, type, choices and default.

    Flags default to None (so that a config file's values stand unless a flag is given); the help
    shows the dataclass default. Read the values back with `config_overrides`.

    Args:
        group: a parser or argument group.
        kind: the config dataclass.
        section: prefix of the flags' destinations (`data`, `model`, ...).
        names: the fields to expose (default: all).
        defaults: an instance whose values the help shows (default: `kind()`).
    """
    hints = typing.get_type_hints(kind)
    shown = defaults if defaults is not None else kind()
    for f in dataclasses.fields(kind):
        if names is not None and f.name not in names:
            continue
        default = getattr(shown, f.name)
        default_text = f" [default: {default}]" if default not in ("", None) else ""
        help_text = f"{f.metadata.get('help', '')}{default_text}".replace("%", "%%")
        kwargs: dict = {"dest": f"{section}.{f.name}", "default": None, "help": help_text}
        hint = hints[f.name]
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = next((t for t in typing.get_args(hint) if t is not type(None)), hint)
            kwargs["choices"] = f.metadata.get("choices")
            kwargs["metavar"] = f.name.upper() if kwargs["choices"] is None else None
        group.add_argument(flag_name(f.name), **kwargs)


def config_overrides(args: argparse.Namespace, section: str) -> dict:
    """The `section` flags that were given, as `{field: value}`."""
    prefix = f"{section}."
    return {key[len(prefix):]: value for key, value in vars(args).items()
            if key.startswith(prefix) and value is not None}


def fail(message: str, code: int = 2) -> NoReturn:
    """Exits with `error: message` on stderr (one line, no traceback)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


USER_ERRORS = (ValueError, OSError)
_DATA_LOSS_EXPLAINERS: list = []


def on_data_loss(explain: Callable[[], "str | None"]) -> None:
    """Registers `explain()`, asked for a one-line message (or None) when TensorFlow reports lost data
    (a `DataLossError`, which does not say which file): `app.records.dataset` names the corrupt shard."""
    _DATA_LOSS_EXPLAINERS.append(explain)


MAX_SHOWN = 1000  # characters of one error or traceback line: the rest is cut
# A bytes literal of over 40 characters in an error message or traceback (the repr of a photo's
# bytes): shown as its length, never as its content.
_LONG_BYTES = re.compile(r"""\bb(['"])(?:\\.|(?!\1)[^\\\n]){40,}\1""")


@contextlib.contextmanager
def user_errors(verbose: bool = False) -> Iterator[None]:
    """Turns input errors (bad files, values, paths, full disks) into `error: …` and exit code 2.

    With `verbose`, the traceback is shown instead. Any other exception (a bug) shows its traceback,
    exit code 1, with long bytes literals and lines cut (`clip`): never a photo's bytes.
    """
    try:
        yield
    except USER_ERRORS as err:
        if verbose:
            _show_traceback(err)
        # An InputError or a file error says all there is to say; another error may be a bug.
        fail(describe(err) + ("" if isinstance(err, (InputError, OSError)) else VERBOSE_HINT))
    except Exception as err:  # TensorFlow's own errors: a corrupt shard, a failed write, no memory
        if verbose or not type(err).__module__.startswith("tensorflow.python.framework.errors"):
            _show_traceback(err)
        named = type(err).__name__ == "DataLossError" and next(
            filter(None, (explain() for explain in _DATA_LOSS_EXPLAINERS)), None)
        fail(named or f"TensorFlow {type(err).__name__}: {describe(err).split(' [[')[0]}{VERBOSE_HINT}")


def clip(text: str) -> str:
    """`text` with each long bytes literal replaced by its length, and each line cut to `MAX_SHOWN`
    characters (an exception's message may hold the repr of a whole input, such as a photo)."""
    text = _LONG_BYTES.sub(lambda m: f"<bytes literal of {len(m[0])} characters>", text)
    return "\n".join(line if len(line) <= MAX_SHOWN else f"{line[:MAX_SHOWN]}... [{len(line) - MAX_SHOWN} characters cut]"
                     for line in text.split("\n"))


def _show_traceback(err: BaseException) -> NoReturn:
    """Prints `err`'s traceback, clipped, and exits with code 1."""
    print(clip("".join(traceback.format_exception(err))), file=sys.stderr, end="")
    sys.exit(1)


@contextlib.contextmanager
def writing_to(path) -> Iterator[None]:
    """Names `path` in an OS error that names no file (a full or read-only disk while writing it)."""
    try:
        yield
    except OSError as err:
        if err.filename is not None or err.errno is None:
            raise
        raise OSError(err.errno, f"{err.strerror} (while writing {path})") from err


def describe(err: BaseException) -> str:
    """One line for an exception: its message, with the file for OS errors."""
    if isinstance(err, OSError) and err.filename is not None:
        return clip(f"{err.filename}: {err.strerror or err}")
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return clip(" ".join(str(err).split())) or type(err).__name__


def guarded(main: Callable) -> Callable:
    """Decorates a CLI `main(argv)`: input errors become one-line errors (see `user_errors`).

    The decorated function's `console` attribute is its console-script entry point (`setup.py`).
    """

    @functools.wraps(main)
    def wrapper(argv=None):
        argv = sys.argv[1:] if argv is None else argv
        with user_errors(verbose="--verbose" in argv):
            return main(argv)

    return console_script(wrapper)


def console_script(main: Callable) -> Callable:
    """Gives a CLI `main(argv=None)` a `console` attribute: its console-script entry point (`setup.py`).

    It runs the command as `python app/X.py` does, exit status 0 unless an error exits first: the
    value that `main` returns is for Python callers, and a console script would exit with it.
    """

    def console() -> None:
        main()

    main.console = console
    return main


_sigterm_watched = False


def exit_on_sigterm() -> None:
    """Makes SIGTERM end the process (exit code 143) even while a library blocks in C++ or
    installs its own SIGTERM handler, as TensorFlow's multi-worker runtime does.

    SIGTERM is blocked in this thread, and so in every thread started afterwards, and one watcher
    thread waits for it. Call it before TensorFlow is imported (its threads start at import).
    """
    global _sigterm_watched
    if _sigterm_watched or threading.current_thread() is not threading.main_thread():
        return
    _sigterm_watched = True
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def watch():
        signal.sigwait({signal.SIGTERM})
        logging.getLogger("app").error("received SIGTERM: stopping")
        logging.shutdown()
        os._exit(143)

    threading.Thread(target=watch, name="sigterm-watcher", daemon=True).start()
