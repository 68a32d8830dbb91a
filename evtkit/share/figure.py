"""What every evtkit figure shares: colours, escaping of traffic text, the common layout."""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

__all__ = ["COLORS", "STATUS_COLORS", "esc", "missing", "palette", "titled"]

COLORS = {"queue": "#f2a33a", "processing": "#3b7dd8", "publish": "#9b9b9b",
          "critical": "#d62728", "event": "#2ca02c", "delivery": "#3b7dd8",
          "handler": "#7f7f7f", "base": "#7f9cc0", "other": "#d9534f"}
STATUS_COLORS = {"OK": "#2ca02c", "WARN": "#f2a33a", "ERR": "#9467bd", "STALL": "#d62728",
                  "STOP": "#000000"}


def esc(value: Any) -> str:
    """Text from the traffic, safe in plotly labels and hovers (blank when missing)."""
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else \
        html.escape(str(value))


def titled(fig: go.Figure, title: str | None, default: str) -> go.Figure:
    """``fig`` with its title (``default`` unless given) and evtkit's common layout."""
    fig.update_layout(title=title if title is not None else default, template="plotly_white",
                      margin={"l": 60, "r": 20, "t": 60, "b": 50})
    return fig


def missing(value: Any) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def palette(i: int) -> str:
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
              "#7f7f7f", "#bcbd22", "#17becf"]
    return colors[i % len(colors)]


