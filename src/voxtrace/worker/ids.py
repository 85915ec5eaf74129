"""Worker ids, `<node_id>/<supervisor pid>/<slot>.<generation>`, formatted and read here.

The id says which node and which supervisor incarnation holds a job: a restarted
supervisor takes back every job of its node whose id names another pid, and a job whose
supervisor pid is gone on this machine is requeued at once instead of after its lease.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

__all__ = ["WorkerId"]

_PATTERN = re.compile(r"^(?P<node>[^/]+)/(?P<pid>\d+)/(?P<slot>\d+)(?:\.(?P<generation>\d+))?$")


@dataclass(frozen=True)
class WorkerId:
    """One worker process: its node, its supervisor's pid, its slot and restart count."""

    node_id: str
    supervisor_pid: int
    slot: int
    generation: int

    def __str__(self) -> str:
        return f"{self.node_id}/{self.supervisor_pid}/{self.slot}.{self.generation}"

    @staticmethod
    def supervisor_prefix(node_id: str, supervisor_pid: int) -> str:
        """What every worker id of one supervisor incarnation starts with."""
        return f"{node_id}/{supervisor_pid}/"

    @classmethod
    def parse(cls, text: str | None) -> WorkerId | None:
        """The id in `text`, or None for anything that is not a worker id."""
        match = _PATTERN.match(text or "")
        if match is None:
            return None
        return cls(
            match["node"], int(match["pid"]), int(match["slot"]), int(match["generation"] or 0)
        )

    def supervisor_gone(self) -> bool:
        """True when this id's supervisor pid no longer exists on this machine (only
        meaningful for ids of this node)."""
        try:
            os.kill(self.supervisor_pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False  # exists, owned by someone else
        return False
