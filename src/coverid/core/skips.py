"""Record of inputs skipped during preprocessing, and the failure budget."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from coverid.core.errors import CoveridError
from coverid.core.io import write_json


@dataclass
class SkipLog:
    """Inputs that were skipped, each with a one-line reason."""

    total: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)

    def add(self, path: str | Path, reason: str) -> None:
        """Record that `path` was skipped for `reason`."""
        self.skipped.append({"path": str(path), "reason": reason})

    @property
    def failed_fraction(self) -> float:
        """Fraction of inputs skipped."""
        return len(self.skipped) / self.total if self.total else 0.0

    def write(self, path: str | Path) -> None:
        """Write the report as JSON, atomically."""
        write_json(path, {"total": self.total, "skipped": len(self.skipped), "files": self.skipped})

    def check(self, max_failed_fraction: float) -> None:
        """Raise a clear summary when more than the allowed fraction failed."""
        if self.total and self.failed_fraction > max_failed_fraction:
            first = self.skipped[0]
            raise CoveridError(
                f"{len(self.skipped)} of {self.total} inputs failed "
                f"({self.failed_fraction:.0%} > max_failed_fraction {max_failed_fraction:.0%}); "
                f"first: {first['path']}: {first['reason']}"
            )
