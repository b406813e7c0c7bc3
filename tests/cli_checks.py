"""The command line run in-process by tests, and what a refusal of bad input looks like."""

from __future__ import annotations

from typing import Any

from ddrank.cli import main


def run_cli(capsys, *args: Any) -> tuple[int, str, str]:
    """``ddrank args`` in this process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    """Exit 2 and one line ``ddrank: error: ...`` on stderr naming every fragment, no traceback."""
    assert code == 2, err
    assert err.startswith("ddrank: error: ") and err.endswith("\n"), err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"
