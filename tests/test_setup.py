"""The Makefile's set-up step for the browser test (``make system-deps``), run against stand-ins for
apt-get and sudo: it installs Chromium and its WebDriver when missing, as root or through sudo, and
otherwise stops with a message that says what to run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MISSING = "ddrank-test-browser ddrank-test-driver"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _stub(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


@pytest.fixture
def tools(tmp_path):
    """Stand-in apt-get (logs its calls, 'installs' the commands into bin/) and sudo variants."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    install = "".join(
        f'printf "#!/bin/sh\\n" > "{bin_dir}/{c}"; chmod +x "{bin_dir}/{c}"; ' for c in MISSING.split()
    )
    apt = _stub(
        tmp_path / "apt-get",
        f'echo "apt-get DEBIAN_FRONTEND=$DEBIAN_FRONTEND $*" >> "{log}"\n'
        f'case "$1" in install) {install};; esac\n',
    )
    failing_apt = _stub(tmp_path / "failing-apt-get", f'echo "apt-get $*" >> "{log}"; exit 100\n')
    sudo = _stub(tmp_path / "sudo", f'echo "sudo $*" >> "{log}"; [ "$1" = -n ] && shift; exec "$@"\n')
    locked_sudo = _stub(tmp_path / "locked-sudo", 'echo "sudo: a password is required" >&2; exit 1\n')
    return {
        "bin": bin_dir,
        "log": log,
        "apt": apt,
        "failing_apt": failing_apt,
        "sudo": sudo,
        "locked": locked_sudo,
    }


def _setup(tools, **variables: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    settings = {
        "BROWSER_COMMANDS": MISSING,
        "SUDO": "/nonexistent/sudo",
        "APT_GET": str(tools["apt"]),
    } | variables
    env = dict(os.environ, PATH=f"{tools['bin']}{os.pathsep}{os.environ['PATH']}")
    run = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "system-deps", *(f"{k}={v}" for k, v in settings.items())],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    calls = tools["log"].read_text().splitlines() if tools["log"].exists() else []
    return run, calls


def test_nothing_happens_when_the_commands_exist(tools):
    run, calls = _setup(tools, BROWSER_COMMANDS="sh env", USER_ID="1000")
    assert (run.returncode, run.stdout, run.stderr, calls) == (0, "", "", [])


def test_root_installs_the_packages_directly(tools):
    run, calls = _setup(tools, USER_ID="0", SUDO=str(tools["sudo"]))
    assert run.returncode == 0, run.stderr
    assert "installing chromium chromium-driver for the browser test" in run.stdout
    assert calls == [
        "apt-get DEBIAN_FRONTEND=noninteractive update -q",
        "apt-get DEBIAN_FRONTEND=noninteractive install -y -q chromium chromium-driver",
    ]
    again, calls_again = _setup(tools, USER_ID="0")  # now installed: nothing more to do
    assert again.returncode == 0 and again.stdout == "" and calls_again == calls


def test_a_user_installs_through_sudo_without_a_prompt(tools):
    run, calls = _setup(tools, USER_ID="1000", SUDO=str(tools["sudo"]))
    assert run.returncode == 0, run.stderr
    assert calls[0] == "sudo -n true"
    assert calls[1:] == [
        "sudo -n env DEBIAN_FRONTEND=noninteractive " + str(tools["apt"]) + " update -q",
        "apt-get DEBIAN_FRONTEND=noninteractive update -q",
        "sudo -n env DEBIAN_FRONTEND=noninteractive "
        + str(tools["apt"])
        + " install -y -q chromium chromium-driver",
        "apt-get DEBIAN_FRONTEND=noninteractive install -y -q chromium chromium-driver",
    ]


@pytest.mark.parametrize("sudo", ["/nonexistent/sudo", "locked"])
def test_without_root_or_passwordless_sudo_it_stops_saying_what_to_run(tools, sudo):
    run, calls = _setup(tools, USER_ID="1000", SUDO=str(tools.get(sudo, sudo)))
    assert run.returncode != 0 and calls == []
    assert "needs ddrank-test-browser ddrank-test-driver" in run.stderr
    assert f"run 'sudo {tools['apt']} install -y chromium chromium-driver' once" in run.stderr


def test_a_failed_install_stops_with_a_message(tools):
    run, calls = _setup(tools, USER_ID="0", APT_GET=str(tools["failing_apt"]))
    assert run.returncode != 0 and calls == ["apt-get update -q"]
    assert f"'{tools['failing_apt']} install chromium chromium-driver' failed" in run.stderr


def test_a_system_without_apt_get_says_so(tools):
    run, calls = _setup(tools, USER_ID="0", APT_GET="/nonexistent/apt-get")
    assert run.returncode != 0 and "has no /nonexistent/apt-get" in run.stderr


def test_ci_runs_nothing_but_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text()
    commands = [line for line in script.splitlines() if line.strip() and not line.startswith("#")]
    assert commands[-1] == "exec make test" and "apt-get" not in script
    assert "make test" in (ROOT / "README.md").read_text()
