"""Rendering of results: terminal tables, and leaderboards as Markdown, CSV/JSON and self-contained HTML."""
