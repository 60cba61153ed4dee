"""Stand-in for webui v1.10.1 `modules/call_queue.py`: how UI buttons run GPU work one job at a time.

`wrap_gradio_gpu_call(func)` runs `func` under `queue_lock` between `state.begin(job=…)` and `state.end()`; an
exception becomes a report plus an error `<div>` as the last output, and every result gets the "Time taken" HTML
appended to its last output. No progress API: the task id (a first argument "task(…)") only names the job.
"""

from __future__ import annotations

import functools
import html
import threading
import time

from modules import devices, errors, shared

queue_lock = threading.Lock()


def wrap_queued_call(func):
    """`func` under `queue_lock`."""

    @functools.wraps(func)
    def locked(*args, **kwargs):
        with queue_lock:
            return func(*args, **kwargs)

    return locked


def _task_id(args) -> str | None:
    first = args[0] if args else None
    return first if isinstance(first, str) and first.startswith("task(") and first.endswith(")") else None


def wrap_gradio_gpu_call(func, extra_outputs=None):
    @functools.wraps(func)
    def as_job(*args, **kwargs):
        with queue_lock:
            shared.state.begin(job=_task_id(args))
            try:
                return func(*args, **kwargs)
            finally:
                shared.state.end()

    return wrap_gradio_call(as_job, extra_outputs=extra_outputs, add_stats=True)


def wrap_gradio_call(func, extra_outputs=None, add_stats=False):
    @functools.wraps(func)
    def guarded(*args, extra_outputs_array=extra_outputs, **kwargs):
        started = time.perf_counter()
        try:
            outputs = list(func(*args, **kwargs))
        except Exception as e:
            errors.report(f"Error completing request\nArguments: {args} {kwargs}", exc_info=True)
            shared.state.job, shared.state.job_count = "", 0
            placeholders = [None, ""] if extra_outputs_array is None else list(extra_outputs_array)
            outputs = [*placeholders, f"<div class='error'>{html.escape(f'{type(e).__name__}: {e}')}</div>"]

        devices.torch_gc()
        state = shared.state
        state.skipped = state.interrupted = state.stopping_generation = False
        state.job_count = 0
        if add_stats:
            seconds = time.perf_counter() - started
            outputs[-1] += (
                "<div class='performance'><p class='time'>Time taken: <wbr>"
                f"<span class='measurement'>{seconds:.1f} sec.</span></p></div>"
            )
        return tuple(outputs)

    return guarded


wrap_gradio_call_no_job = wrap_gradio_call
