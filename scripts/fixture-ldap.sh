#!/usr/bin/env bash
# Serves the campus fixture (tests/fixtures/campus.ldif) from a private slapd, for demos and
# manual runs. The same server the integration tests start (tests/support/slapd.rs), minus TLS.
#
#   scripts/fixture-ldap.sh start [DIR] [PORT]   load the fixture into DIR (default
#                                                 target/fixture-ldap) and serve it on
#                                                 ldap://127.0.0.1:PORT (default 3389)
#   scripts/fixture-ldap.sh stop  [DIR]          stop it (DIR is kept; start reloads it)
#
# Extra LDIF files to load (for example generated people) can be listed in FIXTURE_EXTRA_LDIF,
# separated by spaces. Needs Debian's slapd and ldap-utils (apt-get install slapd ldap-utils).
#
# Bind as cn=ldap2exo,ou=services,dc=example,dc=edu with password ldap2exo-test-password
# (paged reads only: 10 entries per unpaged search), or anonymously.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cmd="${1:-}"
dir="${2:-$root/target/fixture-ldap}"
port="${3:-3389}"

for tool in /usr/sbin/slapd /usr/sbin/slapadd /usr/bin/ldapwhoami; do
    if [ ! -x "$tool" ]; then
        echo "$tool is missing: apt-get install -y slapd ldap-utils" >&2
        exit 2
    fi
done

stop() {
    if [ -f "$dir/slapd.pid" ]; then
        pid="$(cat "$dir/slapd.pid")"
        if kill "$pid" 2>/dev/null; then
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
        rm -f "$dir/slapd.pid"
    fi
}

case "$cmd" in
start)
    stop
    rm -rf "$dir/db"
    mkdir -p "$dir/db"
    dir="$(cd "$dir" && pwd)"
    cat > "$dir/slapd.conf" <<EOF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/misc.schema
include "$root/tests/fixtures/schema/ldap2exo-mail.schema"
pidfile "$dir/slapd.pid"
argsfile "$dir/slapd.args"
modulepath /usr/lib/ldap
moduleload back_mdb
loglevel 0
sizelimit size.soft=500 size.hard=500 size.prtotal=unlimited

database mdb
maxsize 1073741824
suffix "dc=example,dc=edu"
rootdn "cn=admin,dc=example,dc=edu"
rootpw admin-test-password
directory "$dir/db"
index objectClass eq
index uid,mail eq
index entryUUID eq
limits dn.exact="cn=ldap2exo,ou=services,dc=example,dc=edu" size.soft=10 size.hard=10 size.prtotal=unlimited
limits dn.exact="cn=limited,ou=services,dc=example,dc=edu" size.soft=20 size.hard=20 size.prtotal=20
access to attrs=userPassword
  by anonymous auth
  by * none
access to *
  by * read
EOF
    for ldif in "$root/tests/fixtures/campus.ldif" ${FIXTURE_EXTRA_LDIF:-}; do
        /usr/sbin/slapadd -q -f "$dir/slapd.conf" -l "$ldif"
    done
    /usr/sbin/slapd -f "$dir/slapd.conf" -h "ldap://127.0.0.1:$port/"
    for _ in $(seq 100); do
        if /usr/bin/ldapwhoami -x -H "ldap://127.0.0.1:$port" >/dev/null 2>&1; then
            echo "fixture LDAP on ldap://127.0.0.1:$port (base ou=people,dc=example,dc=edu; data in $dir)"
            exit 0
        fi
        sleep 0.1
    done
    echo "slapd did not answer on port $port" >&2
    exit 1
    ;;
stop)
    stop
    ;;
*)
    sed -n '2,16p' "$0" >&2
    exit 2
    ;;
esac
