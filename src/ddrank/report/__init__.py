"""Rendering of results: terminal tables (and, later, Markdown, CSV/JSON, HTML)."""
