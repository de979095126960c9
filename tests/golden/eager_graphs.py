"""A graph backend that runs on the CPU (``claimbench.train.graphs.GraphBackend``), so that the
behaviour suite can train through the loop's graph path: warm-up, capture at each learning-rate
phase, replay, release, and the fall-back to eager steps when a capture fails.

A "graph" here is the step closure itself: ``capture`` returns it without running it (a CUDA
capture records kernels, it does not run them) and ``replay`` calls it. What the graph path then
computes is the loop's, not CUDA's: ``claimbench gpu-check`` compares real graphs on a GPU.
"""

from __future__ import annotations

from typing import Callable


class EagerGraphs:
    """``capturable``: whether the loop must build optimizers that can be captured (their state on
    the device; Adagrad then steps ``CapturableAdagrad``). ``fail_capture``: every capture raises,
    as a capture torch refuses does."""

    def __init__(self, capturable: bool = False, fail_capture: bool = False):
        self.capturable = capturable
        self.fail_capture = fail_capture

    def warmup(self, step: Callable[[], None]) -> None:
        step()

    def new_pool(self) -> object:
        return object()

    def capture(self, step: Callable[[], None], pool: object) -> Callable[[], None]:
        if self.fail_capture:
            raise RuntimeError("capture refused (the behaviour suite's failing backend)")
        return step

    def replay(self, graph: Callable[[], None]) -> None:
        graph()

    def release(self, graph: Callable[[], None]) -> None:
        pass


# The backends a case can name (``Case.graphs``).
BACKENDS = {
    "eager": lambda: EagerGraphs(),
    "capturable": lambda: EagerGraphs(capturable=True),
    "failing": lambda: EagerGraphs(fail_capture=True),
}
