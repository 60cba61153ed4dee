"""Test double of webui v1.10.1 `modules/shared_state.py`: `State`, the running job's progress counters and the
interrupt / skip / stop-generating flags that the sampling loop checks."""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)

# what a new job starts from (begin() restores these)
_JOB_START = {
    "skipped": False,
    "interrupted": False,
    "stopping_generation": False,
    "job": "",
    "job_no": 0,
    "job_count": 0,
    "processing_has_refined_job_count": False,
    "job_timestamp": "0",
    "sampling_step": 0,
    "sampling_steps": 0,
    "current_latent": None,
    "current_image": None,
    "current_image_sampling_step": 0,
    "id_live_preview": 0,
    "textinfo": None,
    "time_start": None,
}


class State:
    def __init__(self):
        self.__dict__.update(_JOB_START)
        self.server_start: float = time.time()

    def skip(self):
        """Ends the current batch; the job goes on with the next."""
        log.info("skip requested")
        self.skipped = True

    def interrupt(self):
        """Ends the job after the current denoiser call."""
        log.info("interrupt requested")
        self.interrupted = True

    def stop_generating(self):
        """Ends the job after the current batch."""
        log.info("stop generating requested")
        self.stopping_generation = True  # checked before each batch

    def nextjob(self):
        self.job_no += 1
        self.sampling_step = self.current_image_sampling_step = 0

    def begin(self, job: str = "(unknown)"):
        server_start = self.server_start
        self.__dict__.update(_JOB_START)
        self.server_start = server_start
        self.job, self.job_count = job, -1  # -1: process_images sets the count
        self.time_start, self.job_timestamp = time.time(), time.strftime("%Y%m%d%H%M%S")
        log.info("job %s begins", job)

    def end(self):
        log.info("job %s ends", self.job)
        self.job, self.job_count = "", 0

    def dict(self):
        keys = ("skipped", "interrupted", "stopping_generation", "job", "job_count", "job_timestamp", "job_no")
        return {key: getattr(self, key) for key in (*keys, "sampling_step", "sampling_steps")}

    def set_current_image(self):
        """Live previews are not modelled."""

    def do_set_current_image(self):
        """Live previews are not modelled."""

    def assign_current_image(self, image):
        self.current_image, self.id_live_preview = image, self.id_live_preview + 1
