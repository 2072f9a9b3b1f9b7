#!/usr/bin/env bash
# Installs everything the checks and tests need, then runs all of them.
# Usage: bash tests/run.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Debian packages: promtool and prometheus (rule tests, metrics lint, dashboard queries),
# amtool (the compose stack's Alertmanager config), systemd-analyze (the unit file), nginx
# (the static-file reference of the benchmark smoke run).
packages=()
command -v promtool >/dev/null 2>&1 || packages+=(prometheus)
command -v amtool >/dev/null 2>&1 || packages+=(prometheus-alertmanager)
command -v systemd-analyze >/dev/null 2>&1 || packages+=(systemd)
command -v nginx >/dev/null 2>&1 || packages+=(nginx-light)
if ((${#packages[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${packages[@]}" >/dev/null
fi

# Python: the package and its test tools in a virtual environment of its own.
python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
export PATH="$PWD/.venv/bin:$PATH"

echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy (strict)"
mypy
echo "== import contracts (the layers of exporter/)"
lint-imports
# pytest exits 5 when a selection (-k, a path) leaves a lane without tests; that is no failure.
lane() {
    local status=0
    pytest "$@" || status=$?
    [ "$status" -eq 0 ] || [ "$status" -eq 5 ]
}

# The fast lane alone covers at least 90 % of exporter/ (checked when the whole lane runs).
floor=0
[ "$#" -gt 0 ] || floor=90
echo "== fast lane: in process, with coverage of exporter/"
lane -m "not e2e" --cov --cov-report=term --cov-fail-under="$floor" "$@"
echo "== end-to-end lane: real processes, a real Prometheus, real signals"
lane -m e2e "$@"
