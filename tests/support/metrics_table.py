"""The metrics table of docs/observability.md, read as the tests need it: each metric's name, type and labels."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

PAGE = Path(__file__).parents[2] / "docs" / "observability.md"
_ROW = re.compile(r"^\| `(skuflow_[a-z0-9_]+)` \| (counter|gauge|histogram) \|([^|]*)\|")


@dataclass(frozen=True)
class Documented:
    name: str  # as queried: a counter's with `_total`
    type: str
    labels: frozenset[str]  # besides `service`

    @property
    def family(self) -> str:
        """The name prometheus-client's parser gives its family (a counter's without `_total`)."""
        return self.name.removesuffix("_total") if self.type == "counter" else self.name

    def series_names(self) -> set[str]:
        """The names its samples carry."""
        if self.type == "histogram":
            return {f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count"}
        return {self.name}


def documented_metrics() -> dict[str, Documented]:
    """Each row of the table under "## Metrics", by name."""
    section = PAGE.read_text().split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if match := _ROW.match(line):
            name, kind, labels = match.groups()
            rows[name] = Documented(name, kind, frozenset(re.findall(r"`([a-z_]+)`", labels)))
    assert rows, f"no metrics table under '## Metrics' in {PAGE}"
    return rows
