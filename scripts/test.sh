#!/usr/bin/env bash
# The whole test suite: installs slapd if missing, then runs every test of the workspace
# (unit tests, the integration tests against a private slapd, the tenant emulator's tests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --workspace --locked "$@"
