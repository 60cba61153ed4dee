"""Mirror of modules/errors.py: report/display print to stderr and keep the last exceptions in `exception_records`.

Not in the webui: `reported` keeps every message passed to `report`/`display` (tests assert on it).
"""

import sys
import textwrap
import traceback

exception_records = []
reported = []


def format_traceback(tb):
    return [[f"{x.filename}, line {x.lineno}, {x.name}", x.line] for x in traceback.extract_tb(tb)]


def format_exception(e, tb):
    return {"exception": str(e), "traceback": format_traceback(tb)}


def get_exceptions():
    return list(reversed(exception_records))


def record_exception():
    _, e, tb = sys.exc_info()
    if e is None:
        return
    if exception_records and exception_records[-1] == e:
        return
    exception_records.append(format_exception(e, tb))
    if len(exception_records) > 5:
        exception_records.pop(0)


def report(message: str, *, exc_info: bool = False) -> None:
    """Print an error message to stderr, with optional traceback."""
    record_exception()
    reported.append(message)
    for line in message.splitlines():
        print("***", line, file=sys.stderr)
    if exc_info:
        print(textwrap.indent(traceback.format_exc(), "    "), file=sys.stderr)
        print("---", file=sys.stderr)


def print_error_explanation(message):
    record_exception()
    print("\n".join(f"    {line}" for line in message.strip().split("\n")), file=sys.stderr)


def display(e: Exception, task, *, full_traceback=False):
    record_exception()
    reported.append(f"{task or 'error'}: {type(e).__name__}: {e}")
    print(f"{task or 'error'}: {type(e).__name__}", file=sys.stderr)
    te = traceback.TracebackException.from_exception(e)
    if full_traceback:
        te.stack = traceback.StackSummary(traceback.extract_stack()[:-2] + te.stack)
    print(*te.format(), sep="", file=sys.stderr)


def display_once(e: Exception, task):
    display(e, task)


def run(code, task):
    try:
        code()
    except Exception as e:
        display(task, e)
