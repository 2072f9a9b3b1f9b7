"""The ASGI 3 callables the simulator's application is written against, as plain type aliases.

Loose on purpose: the routes read the few keys they need from ``Scope`` and the messages.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
