"""Mirror of modules/call_queue.py: `queue_lock` and the wrappers UI buttons use for GPU work (no progress API)."""

import html
import threading
import time
from functools import wraps

from modules import devices, errors, shared

queue_lock = threading.Lock()


def wrap_queued_call(func):
    def f(*args, **kwargs):
        with queue_lock:
            res = func(*args, **kwargs)

        return res

    return f


def wrap_gradio_gpu_call(func, extra_outputs=None):
    @wraps(func)
    def f(*args, **kwargs):
        # if the first argument is a string that says "task(...)", it is treated as a job id
        if args and type(args[0]) is str and args[0].startswith("task(") and args[0].endswith(")"):
            id_task = args[0]
        else:
            id_task = None

        with queue_lock:
            shared.state.begin(job=id_task)
            res = func(*args, **kwargs)
            shared.state.end()

        return res

    return wrap_gradio_call(f, extra_outputs=extra_outputs, add_stats=True)


def wrap_gradio_call(func, extra_outputs=None, add_stats=False):
    @wraps(func)
    def f(*args, **kwargs):
        return wrap_gradio_call_no_job(func, extra_outputs, add_stats)(
            *args, extra_outputs_array=extra_outputs, **kwargs
        )

    return f


def wrap_gradio_call_no_job(func, extra_outputs=None, add_stats=False):
    @wraps(func)
    def f(*args, extra_outputs_array=extra_outputs, **kwargs):
        t = time.perf_counter()

        try:
            res = list(func(*args, **kwargs))
        except Exception as e:
            errors.report(f"Error completing request\nArguments: {args} {kwargs}", exc_info=True)
            shared.state.job = ""
            shared.state.job_count = 0

            if extra_outputs_array is None:
                extra_outputs_array = [None, ""]

            error_message = f"{type(e).__name__}: {e}"
            res = [*extra_outputs_array, f"<div class='error'>{html.escape(error_message)}</div>"]

        devices.torch_gc()

        shared.state.skipped = False
        shared.state.interrupted = False
        shared.state.stopping_generation = False
        shared.state.job_count = 0

        if not add_stats:
            return tuple(res)

        elapsed = time.perf_counter() - t
        # last item is always HTML
        res[-1] += (
            f"<div class='performance'><p class='time'>Time taken: <wbr><span class='measurement'>"
            f"{elapsed:.1f} sec.</span></p></div>"
        )

        return tuple(res)

    return f
