#!/usr/bin/env bash
# The demo: starts the campus fixture directory in a private slapd (Debian's package; no
# Docker needed) and runs `ldap2exo sync --dry-run` against it. Extra arguments go to sync,
# e.g. `scripts/demo.sh --format markdown`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --quiet --locked --bin ldap2exo --example fixture_ldap
exec target/debug/examples/fixture_ldap -- target/debug/ldap2exo sync --dry-run "$@"
