"""A realistic simulator of the Evotic REST API, for ``--demo``, the tests and the demo stack.

``start_simulator(SimulatorOptions())`` serves a deterministic fleet over real HTTP; ``Fleet`` is
the model behind it, ``FaultSet`` switches misbehaviour on and off, and ``SimulatorApp`` is the
ASGI application that joins them.
"""

from exporter.simulator.app import SimulatorApp
from exporter.simulator.faults import FAULT_KINDS, Endpoint, Fault, FaultError, FaultSet, Scope
from exporter.simulator.fleet import Fleet, UnknownServerError
from exporter.simulator.runner import RunningSimulator, SimulatorOptions, start_simulator
from exporter.simulator.servers import Clock, Direction, billing_period_start

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
