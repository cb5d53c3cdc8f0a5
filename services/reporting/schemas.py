"""Response shapes of the figures (for the OpenAPI document; the CSV has the same columns)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class FigureOut(BaseModel):
    """A figure: when the read model last changed, how it was asked for, and its rows.

    The columns of `rows` are listed in `columns` even when there are no rows,
    so a BI tool sees the same schema whatever the filter.
    """

    as_at: datetime | None
    figure: str
    group_by: str | None = None
    filters: dict[str, Any]
    suppressed: bool
    columns: list[str]
    rows: list[dict[str, Any]]


FIGURE_RESPONSES = {
    200: {
        "model": FigureOut,
        "content": {"text/csv": {"schema": {"type": "string"}, "example": "type,count,share\nfood,123,0.55\n"}},
        "description": "The figure as JSON, or CSV with `Accept: text/csv` or `?format=csv`.",
    },
    304: {"description": "Unchanged since the `ETag` given in `If-None-Match`."},
}
