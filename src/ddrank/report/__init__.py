"""Reporting results: leaderboards and paired comparisons (:mod:`.leaderboard`), their columns
(:mod:`.columns`), and one renderer for the terminal, Markdown, CSV, JSON (:mod:`.render`) and the
self-contained HTML page with plots (:mod:`.html`, :mod:`.plots`)."""
