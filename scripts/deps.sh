#!/usr/bin/env bash
# Install what building and testing respool needs, when it is missing.
#
#   scripts/deps.sh [core|pg|all|bench]     (default: core)
#
# core:  a C compiler, make, pkg-config, Criterion (tests).
# pg:    core plus libpq and a PostgreSQL server (adapter tests, demo).
# all:   pg plus clang.
# bench: a C compiler, make, pkg-config and what `make bench` compares and
#        plots with: APR-util (apr_reslist), libmemcached (memcached_pool),
#        gnuplot, PgBouncer. No Criterion: the benchmarks do not need it.
# Debian packages are installed with apt-get when run as root; otherwise the
# missing ones are named and the script fails, so nothing is half-done
# silently.
set -euo pipefail

want=${1:-core}
case "$want" in
    core | pg | all | bench) ;;
    *) echo "usage: scripts/deps.sh [core|pg|all|bench]" >&2; exit 2 ;;
esac
packages=()

have_header() { # have_header <header> : is it on the compiler's include path?
    printf '#include <%s>\n' "$1" | ${CC:-cc} -E -x c - >/dev/null 2>&1
}

command -v "${CC:-cc}" >/dev/null 2>&1 || packages+=(gcc)
command -v make >/dev/null 2>&1 || packages+=(make)
command -v pkg-config >/dev/null 2>&1 || packages+=(pkg-config)
if [ "$want" != bench ]; then
    have_header criterion/criterion.h || packages+=(libcriterion-dev)
fi

if [ "$want" = pg ] || [ "$want" = all ]; then
    have_header libpq-fe.h || have_header postgresql/libpq-fe.h || packages+=(libpq-dev)
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 &&
       ! command -v initdb >/dev/null 2>&1; then
        packages+=(postgresql)
    fi
    # psql: scripts/pg-sandbox creates its role and database with it.
    if ! ls /usr/lib/postgresql/*/bin/psql >/dev/null 2>&1 &&
       ! command -v psql >/dev/null 2>&1; then
        packages+=(postgresql-client)
    fi
fi
if [ "$want" = all ]; then
    command -v clang >/dev/null 2>&1 || packages+=(clang)
fi
if [ "$want" = bench ]; then
    pkg-config --exists apr-util-1 apr-1 2>/dev/null || packages+=(libaprutil1-dev)
    have_header libmemcachedutil-1.0/util.h || packages+=(libmemcached-dev)
    command -v gnuplot >/dev/null 2>&1 || packages+=(gnuplot-nox)
    # pgbouncer lives in /usr/sbin, often not on a user's PATH.
    command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || packages+=(pgbouncer)
fi

[ ${#packages[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "deps.sh: missing packages: ${packages[*]}" >&2
    echo "deps.sh: run as root, or: sudo apt-get install ${packages[*]}" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "deps.sh: missing ${packages[*]} and no apt-get here: install them by hand" >&2
    exit 1
fi
echo "deps.sh: installing ${packages[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
