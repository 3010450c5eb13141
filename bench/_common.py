"""Helpers shared by the benchmark scripts in this directory (imported as ``_common``: the
scripts run as ``python bench/<name>.py``, which puts this directory on ``sys.path``)."""

from __future__ import annotations

import os
import statistics


def median_ms(samples: list[float]) -> float:
    """The median of ``samples`` (seconds), in milliseconds."""
    return statistics.median(samples) * 1000


def reap_children() -> None:
    """Reap every exited child without blocking (the container inits a benchmark stopped)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
