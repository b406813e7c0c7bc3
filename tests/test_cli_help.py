"""The command line explains itself and answers at once: every subcommand has help and an example, every
option has help text, and building the parser imports no training code (so --help needs no torch)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from ddrank.cli import BACKENDS, METRIC_NAMES, MIN_BOOTSTRAP_ROUNDS, PRECISIONS, build_parser


def _subcommands(
    parser: argparse.ArgumentParser, prefix: str = "ddrank"
) -> list[tuple[str, argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((f"{prefix} {name}", sub))
                found += _subcommands(sub, f"{prefix} {name}")
    return found


def _loaded(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has imported after running ``code``."""
    check = f"import sys\n{code}\nprint('LOADED:' + ','.join(m for m in {modules!r} if m in sys.modules))\n"
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("LOADED:"), done.stdout
    return [m for m in last.removeprefix("LOADED:").split(",") if m]


def test_building_the_parser_and_help_import_no_torch():
    code = (
        "from ddrank.cli import build_parser, main\n"
        "build_parser()\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    )
    assert _loaded(code, ("torch", "torchvision", "scipy", "matplotlib")) == []


def test_commands_that_train_start_without_torchvision_scipy_scikit_learn_or_matplotlib():
    """Each of them takes a second or more to import: they load only when a run needs them (a
    torchvision model, a download, scores, the cache-less digits split, a page)."""
    code = "import ddrank.cli_commands, ddrank.evaluation.evaluator, ddrank.demo, ddrank.planning"
    assert _loaded(code, ("torchvision", "scipy", "sklearn", "matplotlib")) == []


def test_choices_spelled_out_in_the_parser_match_their_sources():
    from ddrank.engine.runner import BACKENDS as runner_backends
    from ddrank.metrics.definitions import METRIC_NAMES as metric_names
    from ddrank.metrics.stats import MIN_BOOTSTRAP_ROUNDS as bootstrap_rounds
    from ddrank.settings import PRECISIONS as precisions

    assert (metric_names, runner_backends, precisions) == (METRIC_NAMES, BACKENDS, PRECISIONS)
    assert bootstrap_rounds == MIN_BOOTSTRAP_ROUNDS


@pytest.mark.parametrize(
    "name, sub", _subcommands(build_parser()), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_subcommand_and_option_explains_itself(name, sub):
    has_children = any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)
    if not has_children:
        assert sub.epilog and "example" in sub.epilog, f"{name} has no example"
    undocumented = [
        "/".join(a.option_strings) or a.dest
        for a in sub._actions
        if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction) and not a.help
    ]
    assert undocumented == [], f"{name}: {undocumented} have no help text"
