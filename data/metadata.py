"""The slice columns kept beside each example (``meta_<name>``): copied fields and counts.

Evaluation cuts its figures by every ``meta_`` column (worst slices, per-slice deltas in
``compare``), so what lands here is what a scientist can slice by.
"""

from __future__ import annotations

import re
from typing import Any

from data.config import DataConfig
from data.errors import DataError


def metadata_columns(where: str, record: dict[str, Any], cfg: DataConfig) -> dict[str, str]:
    """``data.metadata_fields`` copied as strings (missing = ""), and each
    ``data.metadata_counts`` column: how often its pattern matches in its field."""
    row = {f"meta_{name}": "" if record.get(name) is None else str(record.get(name))
           for name in cfg.metadata_fields}
    for name, count in cfg.metadata_counts.items():
        value = record.get(count.field)
        if not isinstance(value, str):
            raise DataError(where, f"data.metadata_counts.{name} counts field {count.field!r}, "
                            f"which is {'missing' if value is None else type(value).__name__}, "
                            "not text")
        row[f"meta_{name}"] = str(len(re.findall(count.pattern, value)))
    return row
