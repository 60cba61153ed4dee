"""Test double of webui v1.10.1 `modules/shared_total_tqdm.py`: the whole-job progress counter, without a console
bar — it only counts, so a test can read how far a job got."""

from __future__ import annotations


class TotalTQDM:
    def __init__(self):
        self.total = 0  # steps planned for the job
        self.n = 0  # steps done

    def reset(self):
        self.n = 0

    def update(self):
        self.n += 1

    def updateTotal(self, new_total):  # the webui spells it so
        self.total = new_total

    def clear(self):
        self.n = 0
