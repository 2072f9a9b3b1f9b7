"""A realistic simulator of the Evotic REST API, for ``--demo``, the tests and the demo stack.

``start_simulator(SimulatorOptions())`` serves a deterministic fleet over real HTTP; ``Fleet`` is
the model behind it, ``FaultSet`` switches misbehaviour on and off, and ``SimulatorApp`` is the
ASGI application that joins them.
"""

from simulator.app import SimulatorApp
from simulator.faults import FAULT_KINDS, Endpoint, Fault, FaultError, FaultSet, Scope
from simulator.fleet import Fleet, UnknownServerError
from simulator.runner import RunningSimulator, SimulatorOptions, start_simulator
from simulator.servers import Clock, Direction, billing_period_start

__all__ = [
    "FAULT_KINDS",
    "Clock",
    "Direction",
    "Endpoint",
    "Fault",
    "FaultError",
    "FaultSet",
    "Fleet",
    "RunningSimulator",
    "Scope",
    "SimulatorApp",
    "SimulatorOptions",
    "UnknownServerError",
    "billing_period_start",
    "start_simulator",
]
