"""Shared logic of the PLW workflow's scripts; each module is importable without the workflow."""
