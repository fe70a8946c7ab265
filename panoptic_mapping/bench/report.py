"""The benchmark's text tables: one column per method, one row per metric."""
from __future__ import annotations

__all__ = ["metric_table"]


def metric_table(results: dict[str, dict], rows: list[str], label_width: int) -> list[str]:
    """The header line and one line per metric in ``rows`` (floats with 3 decimals,
    "-" where a method has no value)."""
    names = list(results)
    width = max(14, *(len(n) + 2 for n in names)) if names else 14
    lines = ["metric".ljust(label_width) + "".join(n.rjust(width) for n in names)]
    for r in rows:
        cells = []
        for n in names:
            v = results[n].get(r)
            cells.append(("-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v))
                         .rjust(width))
        lines.append(r.ljust(label_width) + "".join(cells))
    return lines
