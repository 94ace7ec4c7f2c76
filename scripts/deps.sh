#!/usr/bin/env bash
# Install what building and testing respool needs, when it is missing.
#
#   scripts/deps.sh [core|pg|all|bench|fuzz|valgrind]     (default: core)
#
# core:  a C compiler, make, pkg-config, Criterion (tests).
# pg:    core plus libpq and a PostgreSQL server (adapter tests, demo).
# all:   pg plus clang and its libFuzzer runtime.
# fuzz:  make, clang and its libFuzzer runtime (`make fuzz`). No Criterion.
# valgrind: core, plus valgrind (`make memcheck`, `make helgrind`).
# bench: a C compiler, make, pkg-config and what `make bench` compares and
#        plots with: APR-util (apr_reslist), libmemcached (memcached_pool),
#        gnuplot, PgBouncer. No Criterion: the benchmarks do not need it.
# Debian packages are installed with apt-get when run as root; otherwise the
# missing ones are named and the script fails, so nothing is half-done
# silently.
set -euo pipefail

want=${1:-core}
case "$want" in
    core | pg | all | bench | fuzz | valgrind) ;;
    *) echo "usage: scripts/deps.sh [core|pg|all|bench|fuzz|valgrind]" >&2; exit 2 ;;
esac
packages=()

have_header() { # have_header <header> : is it on the compiler's include path?
    printf '#include <%s>\n' "$1" | ${CC:-cc} -E -x c - >/dev/null 2>&1
}

# Does clang link a libFuzzer target (is its fuzzer runtime installed)?
fuzzer_links() {
    local out rc
    out=$(mktemp) || return 1
    printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n)\n{ return 0; }\n' |
        clang -fsanitize=fuzzer -x c - -o "$out" >/dev/null 2>&1
    rc=$?
    rm -f "$out"
    return $rc
}

# The package holding clang's libFuzzer runtime: Debian 12 and later keep it
# apart from clang, in libclang-rt-<version>-dev (libclang-rt-dev: the
# default version's); older releases ship it with clang. Needs apt's lists.
fuzzer_runtime_package() {
    local version p
    version=$(clang -dumpversion 2>/dev/null | cut -d. -f1)
    for p in ${version:+libclang-rt-$version-dev} libclang-rt-dev; do
        if apt-cache show "$p" >/dev/null 2>&1; then
            echo "$p"
            return
        fi
    done
}

[ "$want" = fuzz ] || command -v "${CC:-cc}" >/dev/null 2>&1 || packages+=(gcc)
command -v make >/dev/null 2>&1 || packages+=(make)
[ "$want" = fuzz ] || command -v pkg-config >/dev/null 2>&1 || packages+=(pkg-config)
if [ "$want" != bench ] && [ "$want" != fuzz ]; then
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
if [ "$want" = all ] || [ "$want" = valgrind ]; then
    command -v valgrind >/dev/null 2>&1 || packages+=(valgrind)
fi
need_fuzzer_runtime=false
if [ "$want" = all ] || [ "$want" = fuzz ]; then
    command -v clang >/dev/null 2>&1 || packages+=(clang)
    if ! command -v clang >/dev/null 2>&1 || ! fuzzer_links; then
        need_fuzzer_runtime=true
    fi
fi
if [ "$want" = bench ]; then
    pkg-config --exists apr-util-1 apr-1 2>/dev/null || packages+=(libaprutil1-dev)
    have_header libmemcachedutil-1.0/util.h || packages+=(libmemcached-dev)
    command -v gnuplot >/dev/null 2>&1 || packages+=(gnuplot-nox)
    # pgbouncer lives in /usr/sbin, often not on a user's PATH.
    command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || packages+=(pgbouncer)
fi

[ ${#packages[@]} -eq 0 ] && [ "$need_fuzzer_runtime" = false ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    if [ "$need_fuzzer_runtime" = true ]; then
        runtime=$(fuzzer_runtime_package)
        echo "deps.sh: clang cannot link a libFuzzer target (-fsanitize=fuzzer): its" \
             "fuzzer runtime is missing (Debian 12+: libclang-rt-<clang version>-dev)" >&2
        packages+=(${runtime:-libclang-rt-dev})
    fi
    echo "deps.sh: missing packages: ${packages[*]}" >&2
    echo "deps.sh: run as root, or: sudo apt-get install ${packages[*]}" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "deps.sh: missing ${packages[*]} and no apt-get here: install them by hand" >&2
    exit 1
fi
what="${packages[*]}"
[ "$need_fuzzer_runtime" = true ] && what="${what:+$what and }clang's libFuzzer runtime"
echo "deps.sh: installing $what" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if [ "$need_fuzzer_runtime" = true ]; then
    runtime=$(fuzzer_runtime_package) # after the update: the lists are current
    [ -n "$runtime" ] && packages+=("$runtime")
fi
[ ${#packages[@]} -eq 0 ] ||
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
if [ "$need_fuzzer_runtime" = true ] && ! fuzzer_links; then
    echo "deps.sh: clang still cannot link -fsanitize=fuzzer; install clang's libFuzzer" \
         "runtime by hand (libclang-rt-<clang version>-dev)" >&2
    exit 1
fi
