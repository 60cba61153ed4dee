"""Mirror of modules/shared_total_tqdm.py without a console bar: counts updates only."""


class TotalTQDM:
    def __init__(self):
        self.total = 0
        self.n = 0

    def reset(self):
        self.n = 0

    def update(self):
        self.n += 1

    def updateTotal(self, new_total):
        self.total = new_total

    def clear(self):
        self.n = 0
