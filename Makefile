# respool — build, test, install.
#
#   make            build/librespool.a and build/librespool.so (versioned)
#   make check      install missing deps, build, run every test (core and
#                   PostgreSQL, on a throwaway server) and the examples
#   make asan       the same under AddressSanitizer + UndefinedBehaviorSanitizer
#   make tsan       the same under ThreadSanitizer
#   make memcheck   a subset of the core tests under valgrind memcheck
#   make helgrind   the same subset under valgrind helgrind
#   make demo       the main job: examples/pg_demo on a throwaway server
#   make pg         build/librespool_pg.a, the PostgreSQL adapter
#   make bench      benchmarks against the floors and the peers, Postgres
#                   included; writes docs/performance.md (QUICK=1: short)
#   make fuzz       fuzz the pool against the model of its contract
#                   (libFuzzer, clang; FUZZ_SECONDS=60)
#   make install    PREFIX=/usr/local DESTDIR= : headers, libraries, respool.pc
#   make install-pg the same plus the PostgreSQL adapter (respool_pg.pc)
#   make clean

VERSION      := 0.1.0
SOVERSION    := 0
CC           ?= cc
BUILD        ?= build
PREFIX       ?= /usr/local
LIBDIR       ?= $(PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
SANITIZE     ?=

WARNINGS     := -Wall -Wextra -Wpedantic -Werror -Wshadow -Wstrict-prototypes \
                -Wmissing-prototypes -Wno-unused-parameter
CFLAGS       ?= -O2 -g
ALL_CFLAGS   := -std=c11 -D_GNU_SOURCE $(WARNINGS) $(CFLAGS) -pthread -Iinclude
ifneq ($(SANITIZE),)
ALL_CFLAGS   += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDSAN        := -fsanitize=$(SANITIZE)
endif
LIB_CFLAGS   := $(ALL_CFLAGS) -fPIC -fvisibility=hidden

# The core library: every src/*.c but the Postgres adapter, which is its own
# library (librespool_pg) so the core needs nothing but pthreads.
PG_SOURCES   := src/respool_pg.c src/respool_pg_cluster.c
LIB_SOURCES  := $(filter-out $(PG_SOURCES),$(wildcard src/*.c))
LIB_OBJECTS  := $(LIB_SOURCES:src/%.c=$(BUILD)/obj/%.o)
LIB_HEADERS  := $(wildcard src/*.h) include/respool.h
STATIC_LIB   := $(BUILD)/librespool.a
SHARED_LIB   := $(BUILD)/librespool.so.$(VERSION)

TEST_SOURCES := $(wildcard tests/test_*.c)
TEST_SUPPORT := $(wildcard tests/support/*.c) $(wildcard tests/model/*.c)
TEST_BINARY  := $(BUILD)/tests/respool_tests
# TEST_RUNNER=shim builds the same tests against tests/shim, a minimal
# Criterion stand-in, for ThreadSanitizer (Criterion cannot start under it:
# its fixed-address arena collides with TSan's memory layout).
TEST_RUNNER  ?= criterion
ifeq ($(TEST_RUNNER),shim)
TEST_CFLAGS  := -Itests/shim
TEST_LINK    := tests/shim/runner.c
TEST_DEPS    := tests/shim/runner.c tests/shim/criterion/criterion.h
else
TEST_CFLAGS  :=
TEST_LINK    := -lcriterion
TEST_DEPS    :=
endif
EXAMPLES     := $(BUILD)/examples/handles $(BUILD)/examples/ready_poll

.PHONY: all check test examples asan tsan demo bench install install-pg uninstall clean deps pg pg-test fuzz

all: $(STATIC_LIB) $(SHARED_LIB)

$(BUILD)/obj/%.o: src/%.c $(LIB_HEADERS) | $(BUILD)/obj
	$(CC) $(LIB_CFLAGS) -c $< -o $@

$(STATIC_LIB): $(LIB_OBJECTS)
	rm -f $@
	ar rcs $@ $^

$(SHARED_LIB): $(LIB_OBJECTS)
	$(CC) -shared -Wl,-soname,librespool.so.$(SOVERSION) $(LDSAN) -pthread -o $@ $^
	ln -sf librespool.so.$(VERSION) $(BUILD)/librespool.so.$(SOVERSION)
	ln -sf librespool.so.$(VERSION) $(BUILD)/librespool.so

$(BUILD)/obj $(BUILD)/tests $(BUILD)/examples $(BUILD)/bench:
	mkdir -p $@

# Everything `make check` and `make demo` need (Criterion, libpq, a
# PostgreSQL server): installed with apt-get when run as root.
deps:
	@scripts/deps.sh pg

$(TEST_BINARY): $(TEST_SOURCES) $(TEST_SUPPORT) $(wildcard tests/support/*.h tests/model/*.h) $(TEST_DEPS) $(STATIC_LIB) | $(BUILD)/tests
	$(CC) $(ALL_CFLAGS) $(TEST_CFLAGS) -Itests -o $@ $(TEST_SOURCES) $(TEST_SUPPORT) $(TEST_LINK) $(STATIC_LIB) $(LDSAN)

$(BUILD)/examples/%: examples/%.c $(STATIC_LIB) | $(BUILD)/examples
	$(CC) $(ALL_CFLAGS) -o $@ $< $(STATIC_LIB) $(LDSAN)

examples: $(EXAMPLES)

# Criterion runs every test in its own process; -j2 matches this project's
# 2-core machines. RESPOOL_TEST_FLAGS adds runner flags (e.g. --filter).
test: $(TEST_BINARY)
	$(TEST_BINARY) -j2 --timeout 120 $(RESPOOL_TEST_FLAGS)

# deps first, on its own: the rest needs what it installs.
check: deps
	$(MAKE) all test examples pg-test
	$(BUILD)/examples/handles
	$(BUILD)/examples/ready_poll

asan:
	$(MAKE) BUILD=build/asan SANITIZE=address,undefined CFLAGS="-O1 -g" test examples pg-test
	build/asan/examples/handles
	build/asan/examples/ready_poll

tsan:
	$(MAKE) BUILD=build/tsan SANITIZE=thread CFLAGS="-O1 -g" TEST_RUNNER=shim test examples pg-test
	build/tsan/examples/handles
	build/tsan/examples/ready_poll

# valgrind (memcheck, helgrind) on a subset of the core tests: the API, the
# stress and race tests at a smaller scale (the RESPOOL_* knobs of
# tests/support/stress_kit.h), the model tests. Built against the shim
# runner, whose forked test processes valgrind follows without
# --trace-children (Criterion's own threads and IPC would only add noise),
# one filter per run; a valgrind error makes that test's process exit 1,
# so the test and the target fail. Each target takes about a minute on 2
# cores. tests/valgrind.supp explains each suppression.
VALGRIND_BUILD   := build/valgrind
VALGRIND_TESTS   := $(VALGRIND_BUILD)/tests/respool_tests
VALGRIND_FILTERS := 'api_*' 'stress_*' 'races_*' 'model*'
VALGRIND_KNOBS   := RESPOOL_STRESS_MS=3000 RESPOOL_STRESS_WAITERS=400 RESPOOL_RACE_ITERATIONS=20000
VALGRIND         := valgrind -q --error-exitcode=1 --suppressions=tests/valgrind.supp
memcheck: VALGRIND_TOOL := --tool=memcheck --leak-check=full --errors-for-leak-kinds=definite
helgrind: VALGRIND_TOOL := --tool=helgrind

.PHONY: memcheck helgrind
memcheck helgrind:
	@scripts/deps.sh valgrind
	$(MAKE) BUILD=$(VALGRIND_BUILD) SANITIZE= CFLAGS="-O1 -g -DRESPOOL_VALGRIND" TEST_RUNNER=shim $(VALGRIND_TESTS)
	@set -e; for filter in $(VALGRIND_FILTERS); do \
	    echo "$@: $$filter"; \
	    $(VALGRIND_KNOBS) $(VALGRIND) $(VALGRIND_TOOL) $(VALGRIND_TESTS) -j2 --timeout=600 \
	        --filter=$$filter; \
	done

# The main job: examples/pg_demo on a throwaway local PostgreSQL server.
demo: deps
	$(MAKE) $(PG_DEMO)
	scripts/with-pg-sandbox $(PG_DEMO)

# QUICK=1: a short run (under a minute on 2 cores) instead of the default
# (about 3 minutes). Arguments: seconds per W3 run, rounds.
# RESPOOL_BENCH_OUT: where the TSV results go (one file per workload).
BENCH_ARGS   := $(if $(QUICK),0.2 3,0.5 7)
RESPOOL_BENCH_OUT ?= $(BUILD)/bench/results
BENCH_SOURCES := bench/core_bench.c bench/harness.c bench/contenders.c bench/floors.c \
                 bench/peers.c bench/workloads.c bench/handoff.c bench/startup.c bench/report.c
BENCH_HEADERS := bench/harness.h bench/contenders.h bench/workloads.h bench/handoff.h \
                 bench/startup.h bench/report.h
# The peers (apr_reslist, libmemcachedutil), their headers as system headers.
BENCH_PEERS  := apr-util-1 apr-1 libmemcached
BENCH_CFLAGS  = $(patsubst -I%,-isystem %,$(shell pkg-config --cflags $(BENCH_PEERS)))
BENCH_LIBS    = $(shell pkg-config --libs $(BENCH_PEERS))

$(BUILD)/bench/core_bench: $(BENCH_SOURCES) $(BENCH_HEADERS) $(STATIC_LIB) | $(BUILD)/bench
	$(CC) $(ALL_CFLAGS) $(BENCH_CFLAGS) -o $@ $(BENCH_SOURCES) $(STATIC_LIB) $(BENCH_LIBS) $(LDSAN)

.PHONY: bench-deps
bench-deps:
	@scripts/deps.sh pg
	@scripts/deps.sh bench

# The report: docs/performance.md and docs/img/*.svg from a full run; a
# QUICK run writes its report under build/ so the committed one stays the
# record of a full run.
BENCH_DOC    := $(if $(QUICK),$(BUILD)/bench/performance.md,docs/performance.md)
BENCH_IMG    := $(if $(QUICK),$(BUILD)/bench/img,docs/img)
PG_BENCH_ENV := RESPOOL_BENCH_OUT=$(RESPOOL_BENCH_OUT) $(if $(QUICK),RESPOOL_BENCH_QUICK=1 RESPOOL_BENCH_SECONDS=1)

# deps first, on its own (pkg-config must find what it installs); then the
# core benchmarks, the Postgres one (on the throwaway server, with its own
# PgBouncer), and the report.
bench: bench-deps
	$(MAKE) $(BUILD)/bench/core_bench $(BUILD)/bench/pg_bench
	rm -rf $(RESPOOL_BENCH_OUT) && mkdir -p $(RESPOOL_BENCH_OUT)
	RESPOOL_BENCH_OUT=$(RESPOOL_BENCH_OUT) $(BUILD)/bench/core_bench $(BENCH_ARGS)
	$(PG_BENCH_ENV) scripts/with-pg-sandbox $(BUILD)/bench/pg_bench
	bench/report.sh $(RESPOOL_BENCH_OUT) $(BENCH_DOC) $(BENCH_IMG)

# ---- PostgreSQL adapter --------------------------------------------------
# librespool_pg.a: src/respool_pg.c against libpq. The tests in tests/pg and
# examples/pg_demo run against the throwaway server of scripts/pg-sandbox,
# through scripts/with-pg-sandbox (it starts the server when needed and
# stops it again if it started it).
PG_CFLAGS    := $(shell pkg-config --cflags libpq 2>/dev/null || echo -I/usr/include/postgresql)
PG_LIBS      := $(shell pkg-config --libs libpq 2>/dev/null || echo -lpq)
PG_LIB       := $(BUILD)/librespool_pg.a
PG_TESTS     := $(BUILD)/tests/respool_pg_tests
PG_TEST_SOURCES := $(wildcard tests/pg/*.c)
PG_DEMO      := $(BUILD)/examples/pg_demo
# The cluster pool's tests and example run against scripts/pg-cluster (a
# primary and a streaming replica), through scripts/with-pg-cluster.
PG_CLUSTER_TESTS := $(BUILD)/tests/respool_pg_cluster_tests
PG_CLUSTER_TEST_SOURCES := $(wildcard tests/pg_cluster/*.c)
PG_CLUSTER_EXAMPLE := $(BUILD)/examples/pg_cluster

PG_OBJECTS   := $(PG_SOURCES:src/%.c=$(BUILD)/obj/%.o)
$(PG_OBJECTS): $(BUILD)/obj/%.o: src/%.c src/pg_internal.h include/respool_pg.h include/respool.h | $(BUILD)/obj
	$(CC) $(LIB_CFLAGS) $(PG_CFLAGS) -c $< -o $@

$(PG_LIB): $(PG_OBJECTS)
	rm -f $@
	ar rcs $@ $^

$(PG_TESTS): $(PG_TEST_SOURCES) tests/pg/pg_support.h $(TEST_DEPS) $(PG_LIB) $(STATIC_LIB) | $(BUILD)/tests
	$(CC) $(ALL_CFLAGS) $(PG_CFLAGS) $(TEST_CFLAGS) -Itests/pg -o $@ $(PG_TEST_SOURCES) \
	    $(TEST_LINK) $(PG_LIB) $(STATIC_LIB) $(PG_LIBS) $(LDSAN)

$(PG_CLUSTER_TESTS): $(PG_CLUSTER_TEST_SOURCES) tests/pg/pg_support.c tests/pg/pg_support.h \
                     $(TEST_DEPS) $(PG_LIB) $(STATIC_LIB) | $(BUILD)/tests
	$(CC) $(ALL_CFLAGS) $(PG_CFLAGS) $(TEST_CFLAGS) -Itests/pg -o $@ $(PG_CLUSTER_TEST_SOURCES) \
	    tests/pg/pg_support.c $(TEST_LINK) $(PG_LIB) $(STATIC_LIB) $(PG_LIBS) $(LDSAN)

$(PG_CLUSTER_EXAMPLE): examples/pg_cluster.c include/respool_pg.h $(PG_LIB) $(STATIC_LIB) | $(BUILD)/examples
	$(CC) $(ALL_CFLAGS) $(PG_CFLAGS) -o $@ $< $(PG_LIB) $(STATIC_LIB) $(PG_LIBS) $(LDSAN)

$(PG_DEMO): examples/pg_demo.c include/respool_pg.h $(PG_LIB) $(STATIC_LIB) | $(BUILD)/examples
	$(CC) $(ALL_CFLAGS) $(PG_CFLAGS) -o $@ $< $(PG_LIB) $(STATIC_LIB) $(PG_LIBS) $(LDSAN)

pg: $(PG_LIB)

# The Postgres benchmark (run by `make bench`).
$(BUILD)/bench/pg_bench: bench/pg_bench.c bench/harness.c bench/harness.h include/respool_pg.h \
                        $(PG_LIB) $(STATIC_LIB) | $(BUILD)/bench
	$(CC) $(ALL_CFLAGS) $(PG_CFLAGS) -o $@ bench/pg_bench.c bench/harness.c $(PG_LIB) $(STATIC_LIB) \
	    $(PG_LIBS) $(LDSAN)

# The Postgres half of the tests (one at a time: some restart the server),
# then a short run of the demo.
pg-test: $(PG_TESTS) $(PG_DEMO) $(PG_CLUSTER_TESTS) $(PG_CLUSTER_EXAMPLE)
	scripts/with-pg-sandbox $(PG_TESTS) -j1 --timeout 120 $(RESPOOL_TEST_FLAGS)
	RESPOOL_DEMO_SECONDS=2 scripts/with-pg-sandbox $(PG_DEMO)
	scripts/with-pg-cluster $(PG_CLUSTER_TESTS) -j1 --timeout 180 $(RESPOOL_TEST_FLAGS)
	scripts/with-pg-cluster $(PG_CLUSTER_EXAMPLE)

# ---- fuzzing ----------------------------------------------------------------
# fuzz/fuzz_model: libFuzzer decodes each input into a pool configuration and
# a sequence of operations and runs it against a fresh pool and the model of
# tests/model (the model test's decoder and executor), under ASan + UBSan;
# the library is compiled into the target, so coverage steers by its
# branches. `make fuzz` fuzzes for FUZZ_SECONDS on a copy of fuzz/corpus (the
# committed corpus does not grow) and prints the executions; a failing input
# is saved as $(BUILD)/fuzz/crash-<sha1> (a hang: timeout-<sha1>, after 30 s).
# Replay one with `build/fuzz/fuzz_model <file>`. FUZZ_FLAGS adds libFuzzer
# flags (-jobs=2).
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_FLAGS   ?=
FUZZ_BINARY  := $(BUILD)/fuzz/fuzz_model
FUZZ_SOURCES := fuzz/fuzz_model.c $(wildcard tests/model/*.c) tests/support/fake_factory.c \
                $(LIB_SOURCES)
FUZZ_CFLAGS  := -std=c11 -D_GNU_SOURCE $(WARNINGS) -O1 -g -fno-omit-frame-pointer -pthread \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Iinclude -Itests

# deps.sh fuzz installs clang and its libFuzzer runtime when run as root, or
# names the packages to install.
$(FUZZ_BINARY): $(FUZZ_SOURCES) $(wildcard tests/model/*.h tests/support/*.h) $(LIB_HEADERS)
	@scripts/deps.sh fuzz
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $(FUZZ_SOURCES)

fuzz: $(FUZZ_BINARY)
	rm -rf $(BUILD)/fuzz/corpus && mkdir -p $(BUILD)/fuzz/corpus && cp fuzz/corpus/* $(BUILD)/fuzz/corpus/
	{ $(FUZZ_BINARY) -max_total_time=$(FUZZ_SECONDS) -timeout=30 -print_final_stats=1 \
	    -artifact_prefix=$(BUILD)/fuzz/ $(FUZZ_FLAGS) $(BUILD)/fuzz/corpus 2>&1; \
	    echo $$? > $(BUILD)/fuzz/status; } | tee $(BUILD)/fuzz/last-run.log
	@awk '/^stat::number_of_executed_units/ {n = $$2} /^stat::average_exec_per_sec/ {r = $$2} \
	    END {if (n) printf "fuzz_model: %s executions in $(FUZZ_SECONDS) s (%s/s)\n", n, r}' \
	    $(BUILD)/fuzz/last-run.log
	@exit $$(cat $(BUILD)/fuzz/status)

$(BUILD)/%.pc: %.pc.in Makefile
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(VERSION)|' $< > $@

install: all $(BUILD)/respool.pc
	install -d $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR)/pkgconfig
	install -m 644 include/respool.h $(DESTDIR)$(INCLUDEDIR)/
	install -m 644 $(STATIC_LIB) $(DESTDIR)$(LIBDIR)/
	install -m 755 $(SHARED_LIB) $(DESTDIR)$(LIBDIR)/
	ln -sf librespool.so.$(VERSION) $(DESTDIR)$(LIBDIR)/librespool.so.$(SOVERSION)
	ln -sf librespool.so.$(VERSION) $(DESTDIR)$(LIBDIR)/librespool.so
	install -m 644 $(BUILD)/respool.pc $(DESTDIR)$(LIBDIR)/pkgconfig/

# The PostgreSQL adapter: respool_pg.h, librespool_pg.a, respool_pg.pc
# (pkg-config --libs respool_pg pulls in respool and libpq).
install-pg: install $(PG_LIB) $(BUILD)/respool_pg.pc
	install -m 644 include/respool_pg.h $(DESTDIR)$(INCLUDEDIR)/
	install -m 644 $(PG_LIB) $(DESTDIR)$(LIBDIR)/
	install -m 644 $(BUILD)/respool_pg.pc $(DESTDIR)$(LIBDIR)/pkgconfig/

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/respool.h $(DESTDIR)$(INCLUDEDIR)/respool_pg.h \
	      $(DESTDIR)$(LIBDIR)/librespool.* $(DESTDIR)$(LIBDIR)/librespool_pg.a \
	      $(DESTDIR)$(LIBDIR)/pkgconfig/respool.pc $(DESTDIR)$(LIBDIR)/pkgconfig/respool_pg.pc

clean:
	rm -rf build
