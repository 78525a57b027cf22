"""What `skuflow compare` shows: the harness's report of one mixed phase per mode, keyed by mode."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from skuflow.bench.e2e import PhaseFigures, Report


@dataclass
class Comparison:
    report: Report

    @property
    def modes(self) -> list[PhaseFigures]:
        return self.report.phases

    def as_dict(self) -> dict[str, Any]:
        whole = self.report.as_dict()
        whole["modes"] = {figures.mode: asdict(figures) for figures in self.modes}
        return whole
