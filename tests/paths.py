"""Where things are, for tests at any depth of the tests/ tree."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
"""The project's root directory (Makefile, notebooks/, data/)."""
