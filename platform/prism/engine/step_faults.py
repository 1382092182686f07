"""How a failed step is judged: which faults leave the engine unusable, and the one-shot fault
that chaos tests inject."""

from __future__ import annotations

import torch

from prism.errors import EngineDead, InvalidRequest


class InjectedFault(RuntimeError):
    """The fault an armed :class:`FaultInjector` raises inside a step."""


def is_fatal(error: Exception) -> bool:
    """Whether ``error`` leaves the engine unusable rather than failing one step's requests.

    Fatal: a lost or out-of-step tensor-parallel group (:class:`EngineDead`) and device
    errors (a CUDA context is unusable after one). Everything else, out-of-memory included,
    fails only the step's requests.
    """
    return isinstance(error, EngineDead | torch.AcceleratorError) or "CUDA error" in str(error)


class FaultInjector:
    """Arms a fault for the next step that has work; refused unless ``enabled``.

    :meth:`arm` may be called from any thread; the step's thread calls :meth:`fire`.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._armed = False

    def arm(self) -> None:
        """Make the next :meth:`fire` raise :class:`InjectedFault`."""
        if not self.enabled:
            raise InvalidRequest(
                "fault injection is off: set the engine setting fault_injection", "fault_injection"
            )
        self._armed = True

    def fire(self) -> None:
        """Raise :class:`InjectedFault` once if armed."""
        if self._armed:
            self._armed = False
            raise InjectedFault("injected step fault")
