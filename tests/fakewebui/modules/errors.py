"""Stand-in for webui v1.10.1 `modules/errors.py`: how the webui reports an error and carries on.

`report` and `display` write the message (and a traceback) to stderr and keep the exception's summary in
`exception_records` (the last five, for the webui's sysinfo page). Not in the webui: `reported`, the list of every
message `report`/`display`/`display_once` has written, so tests can assert on swallowed errors.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

exception_records: list[dict[str, Any]] = []
reported: list[str] = []
_shown_once: set[str] = set()


def format_traceback(tb):
    return [[f"{frame.filename}, line {frame.lineno}, {frame.name}", frame.line] for frame in traceback.extract_tb(tb)]


def format_exception(e, tb):
    return {"exception": str(e), "traceback": format_traceback(tb)}


def get_exceptions():
    """Newest first."""
    return exception_records[::-1]


def record_exception():
    """Keep the exception being handled, if any and not the one kept last."""
    _, e, tb = sys.exc_info()
    if e is None or (exception_records and exception_records[-1] == e):
        return
    exception_records.append(format_exception(e, tb))
    del exception_records[:-5]


def _write(lines: list[str]) -> None:
    sys.stderr.write("".join(f"{line}\n" for line in lines))


def report(message: str, *, exc_info: bool = False) -> None:
    """`*** message` on stderr, with the current traceback indented below when `exc_info`."""
    record_exception()
    reported.append(message)
    lines = [f"*** {line}" for line in message.splitlines()]
    if exc_info:
        lines += ["    " + line for line in traceback.format_exc().splitlines()] + ["---"]
    _write(lines)


def print_error_explanation(message):
    record_exception()
    _write(["    " + line for line in message.strip().splitlines()])


def display(e: Exception, task, *, full_traceback=False):
    """`task: ExceptionType` and the exception's traceback (from the program's start with `full_traceback`)."""
    record_exception()
    title = f"{task or 'error'}: {type(e).__name__}"
    reported.append(f"{title}: {e}")
    shown = traceback.TracebackException.from_exception(e)
    if full_traceback:
        shown.stack = traceback.StackSummary(traceback.extract_stack()[:-2] + shown.stack)
    _write([title, "".join(shown.format()).rstrip("\n")])


def display_once(e: Exception, task):
    """`display`, only for the first error of this task."""
    if task not in _shown_once:
        display(e, task)
        _shown_once.add(task)


def run(code, task):
    try:
        code()
    except Exception as e:
        display(e, task)
