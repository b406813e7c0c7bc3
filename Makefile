# Set-up is automatic: `make demo` and `make test` create .venv on first use, and `make test` also
# installs the system packages its browser test needs (see system-deps).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The HTML leaderboard's browser test drives Debian's Chromium through its WebDriver. Set-up installs
# the packages when a command is missing: as root directly, otherwise through sudo without a prompt.
BROWSER_PACKAGES ?= chromium chromium-driver
BROWSER_COMMANDS ?= chromium chromedriver
APT_GET ?= apt-get
SUDO ?= sudo
USER_ID ?= $(shell id -u)
APT := env DEBIAN_FRONTEND=noninteractive $(APT_GET)

.PHONY: demo test test-all lint bench clean system-deps

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

system-deps:
	@missing=""; \
	for command in $(BROWSER_COMMANDS); do \
	    command -v "$$command" >/dev/null 2>&1 || missing="$$missing $$command"; \
	done; \
	[ -n "$$missing" ] || exit 0; \
	how="run 'sudo $(APT_GET) install -y $(BROWSER_PACKAGES)' once, then make test again"; \
	if [ "$(USER_ID)" = 0 ]; then \
	    as_root=""; \
	elif command -v "$(SUDO)" >/dev/null 2>&1 && "$(SUDO)" -n true >/dev/null 2>&1; then \
	    as_root="$(SUDO) -n"; \
	else \
	    echo "set-up: the browser test needs$$missing, and make can install them only as root or through sudo without a password: $$how" >&2; \
	    exit 1; \
	fi; \
	if ! command -v "$(APT_GET)" >/dev/null 2>&1; then \
	    echo "set-up: the browser test needs$$missing, and this system has no $(APT_GET): install Chromium and its WebDriver (chromedriver) with its package manager, then make test again" >&2; \
	    exit 1; \
	fi; \
	echo "set-up: installing $(BROWSER_PACKAGES) for the browser test (missing:$$missing)"; \
	if ! { $$as_root $(APT) update -q && $$as_root $(APT) install -y -q $(BROWSER_PACKAGES); }; then \
	    echo "set-up: '$(APT_GET) install $(BROWSER_PACKAGES)' failed (see above); $$how" >&2; \
	    exit 1; \
	fi; \
	for command in $(BROWSER_COMMANDS); do \
	    command -v "$$command" >/dev/null 2>&1 || { \
	        echo "set-up: $$command is still missing after installing $(BROWSER_PACKAGES); install it by hand" >&2; \
	        exit 1; \
	    }; \
	done

demo: $(STAMP)
	$(VENV)/bin/ddrank demo

test: $(STAMP) system-deps
	$(PY) -m pytest

test-all: $(STAMP) system-deps
	$(PY) -m pytest -m ''

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/protocol_speed.py --small

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
