"""Growing Dual-Memory (docs/design.md §3): Episodic Gamma-GWR networks, episodic + semantic memory.

Public classes: :class:`EpisodicGammaGWR` (one network) and
:class:`GrowingDualMemory` (G-EM + G-SM with replay and imagination). The slow
:mod:`clifer_core.memory.reference` twin is for benchmarks and tests only.
"""

from clifer_core.memory.gdm import GrowingDualMemory
from clifer_core.memory.gwr import EpisodicGammaGWR, NotFittedError

__all__ = ["EpisodicGammaGWR", "GrowingDualMemory", "NotFittedError"]
