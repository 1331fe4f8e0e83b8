# ringcache - one flat Makefile.
#
#   make            build build/ringcached (and the unit-test runner, load generator,
#                   network floor build/rc-floor)
#   make run        install missing dependencies, build, run on 127.0.0.1:11211
#   make test       install missing dependencies, build, run every test
#   make asan/tsan  the same binaries with sanitizers, under build/asan, build/tsan
#   make latcost    the cost of the latency histograms (scripts/latcost.py)
#   make install    binary, unit, options file, man page (PREFIX=/usr/local, DESTDIR=)
#   make clean

BUILD    ?= build
CC       ?= gcc
SANFLAGS ?=
# -flto: the small functions of one module (arena, conn_emit) inline into
# another's request path: 5 % fewer instructions per request (callgrind).
OPT      ?= -O2 -flto=auto
# gcc inlines a copy or clear whose length it can bound (a uint8_t key
# length, a struct) as `rep movs`/`rep stos`, whose start-up cost was 5 % of
# the daemon's CPU at pipeline 16 (perf, cpu-clock); libc's calls are faster
# for such short lengths. x86 only, hence the probe.
STRINGOP := $(shell $(CC) -mstringop-strategy=libcall -E -x c /dev/null >/dev/null 2>&1 && echo -mstringop-strategy=libcall)
CFLAGS   := -std=c11 -Wall -Wextra -Werror $(OPT) $(STRINGOP) -g -D_GNU_SOURCE -I. -MMD -MP $(SANFLAGS) $(EXTRA_CFLAGS)
LDFLAGS  := $(OPT) $(SANFLAGS)
LIBS     := -luring -lmimalloc -lxxhash -lsystemd -lpthread

SHARD_SRC  := $(wildcard shard/*.c)
NET_SRC    := $(wildcard net/*.c)
DAEMON_SRC := $(filter-out daemon/main.c,$(wildcard daemon/*.c))
UNIT_SRC   := $(wildcard tests/unit/*.c)
LG_SRC     := $(wildcard scripts/loadgen*.c)

obj = $(patsubst %.c,$(BUILD)/%.o,$(1))

BIN      := $(BUILD)/ringcached
UNIT_BIN := $(BUILD)/unit_tests
LG_BIN   := $(BUILD)/rc-loadgen
FLOOR_BIN := $(BUILD)/rc-floor

PY       := /usr/bin/python3
PORT     ?= 11211

.PHONY: all run test unit integration soak asan tsan hooks fuzz bench latcost deps install uninstall clean
all: $(BIN) $(UNIT_BIN) $(LG_BIN) $(FLOOR_BIN)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BIN): $(call obj,daemon/main.c $(DAEMON_SRC) $(NET_SRC) $(SHARD_SRC))
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(UNIT_BIN): $(call obj,$(UNIT_SRC) $(DAEMON_SRC) $(NET_SRC) $(SHARD_SRC))
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS) -lcunit

$(LG_BIN): $(call obj,$(LG_SRC))
	$(CC) $(LDFLAGS) -o $@ $^ -lxxhash -lpthread -lm

# The network floor (scripts/floor.c): what bench.sh measures ringcached against.
$(FLOOR_BIN): $(call obj,scripts/floor.c)
	$(CC) $(LDFLAGS) -o $@ $^ -luring -lxxhash

deps:
	@scripts/deps.sh

run: deps
	@$(MAKE) --no-print-directory all
	./$(BIN) -l 127.0.0.1 -p $(PORT)

unit: $(UNIT_BIN)
	./$(UNIT_BIN)

integration: $(BIN) $(LG_BIN) $(FLOOR_BIN) hooks
	RINGCACHED=$(abspath $(BIN)) $(PY) -m pytest -q -p no:cacheprovider tests/integration

# The integrity check (rc-loadgen --verify under eviction) for 60 s, not 10.
soak: $(BIN) $(LG_BIN)
	RINGCACHED=$(abspath $(BIN)) RINGCACHE_SOAK_SECONDS=60 $(PY) -m pytest -q -p no:cacheprovider \
		tests/integration/test_integrity.py

test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory asan
	@$(MAKE) --no-print-directory tsan
	@$(MAKE) --no-print-directory hooks
	@scripts/test.sh

# Sanitizer builds allocate through libc (RINGCACHE_LIBC_HEAP, see
# shard/heap.h) so that ASan/LSan/TSan can see every block.
asan:
	@$(MAKE) --no-print-directory BUILD=build/asan OPT=-O1 EXTRA_CFLAGS=-DRINGCACHE_LIBC_HEAP \
		SANFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" all

tsan:
	@$(MAKE) --no-print-directory BUILD=build/tsan OPT=-O1 EXTRA_CFLAGS=-DRINGCACHE_LIBC_HEAP \
		SANFLAGS="-fsanitize=thread -fno-omit-frame-pointer" all

# The daemon with test hooks (-o watchdog_stall=N) for the watchdog test.
hooks:
	@$(MAKE) --no-print-directory BUILD=build/hooks EXTRA_CFLAGS=-DRINGCACHE_TEST_HOOKS build/hooks/ringcached

# libFuzzer targets (clang): tests/fuzz/fuzz_<name>.c with its seed corpus
# tests/fuzz/corpus/<name>/; each runs FUZZ_TIME seconds on a working copy
# of its corpus under build/fuzz, so the seeds in the tree stay as they are.
FUZZ_CC   ?= clang
FUZZ_TIME ?= 30
FUZZ_SRC  := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN  := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(FUZZ_SRC))
FUZZ_LIB  := net/proto.c net/meta.c $(SHARD_SRC)

build/fuzz/%: tests/fuzz/%.c $(FUZZ_LIB) $(wildcard shard/*.h net/*.h)
	@mkdir -p build/fuzz
	$(FUZZ_CC) -std=c11 -g -O1 -D_GNU_SOURCE -DRINGCACHE_LIBC_HEAP -I. \
		-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
		$< $(FUZZ_LIB) -o $@ -lxxhash

fuzz: $(FUZZ_BIN)
	@set -e; for b in $(FUZZ_BIN); do \
		n=$${b#build/fuzz/fuzz_}; rm -rf build/fuzz/work-$$n; \
		mkdir -p build/fuzz/work-$$n; cp tests/fuzz/corpus/$$n/* build/fuzz/work-$$n/; \
		echo "fuzz: $$n for $(FUZZ_TIME) s"; \
		$$b -max_total_time=$(FUZZ_TIME) -print_final_stats=1 -artifact_prefix=build/fuzz/$$n- build/fuzz/work-$$n \
			2>build/fuzz/$$n.log || { tail -40 build/fuzz/$$n.log; exit 1; }; \
		grep -E 'stat::number_of_executed_units|Done [0-9]+ runs' build/fuzz/$$n.log; \
	done

# ringcached against memcached and the network floor rc-floor (same -t and
# -m, A B C rounds): a table of requests/s, p99 and server CPU per million
# requests, with ratios to memcached and to the floor. BENCH_ARGS passes
# flags to scripts/bench.sh, e.g. make bench BENCH_ARGS=--quick.
BENCH_ARGS ?=
bench: all
	RINGCACHED=$(abspath $(BIN)) LOADGEN=$(abspath $(LG_BIN)) FLOOR=$(abspath $(FLOOR_BIN)) \
		scripts/bench.sh $(BENCH_ARGS)

# The cost of the latency histograms (scripts/latcost.py): instructions
# per request under callgrind and CPU per request, this build against one
# with -DRINGCACHE_NO_LATENCY (under build/nolat). Not part of make test.
latcost: all
	@$(MAKE) --no-print-directory BUILD=build/nolat EXTRA_CFLAGS=-DRINGCACHE_NO_LATENCY build/nolat/ringcached
	$(PY) scripts/latcost.py --with $(abspath $(BIN)) --without $(abspath build/nolat/ringcached) \
		--loadgen $(abspath $(LG_BIN))

# make install [PREFIX=/usr/local] [DESTDIR=]: the binary and man page under
# PREFIX, the unit (its ExecStart pointed at PREFIX's binary) under
# /lib/systemd/system and the options under /etc/default; an existing
# /etc/default/ringcached is kept. Then: systemctl daemon-reload.
PREFIX     ?= /usr/local
UNIT_DIR   := $(DESTDIR)/lib/systemd/system
INSTALLED  := $(DESTDIR)$(PREFIX)/bin/ringcached $(UNIT_DIR)/ringcached.service \
	$(DESTDIR)/etc/default/ringcached $(DESTDIR)$(PREFIX)/share/man/man1/ringcached.1

install: $(BIN)
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/ringcached
	install -D -m 0644 daemon/ringcached.1 $(DESTDIR)$(PREFIX)/share/man/man1/ringcached.1
	@mkdir -p $(UNIT_DIR)
	sed 's|^ExecStart=/usr/bin/ringcached|ExecStart=$(PREFIX)/bin/ringcached|' \
		systemd/ringcached.service > $(UNIT_DIR)/ringcached.service
	chmod 0644 $(UNIT_DIR)/ringcached.service
	@if [ -e $(DESTDIR)/etc/default/ringcached ]; then \
		echo "keeping $(DESTDIR)/etc/default/ringcached"; else \
		echo "install -D -m 0644 systemd/ringcached.conf $(DESTDIR)/etc/default/ringcached"; \
		install -D -m 0644 systemd/ringcached.conf $(DESTDIR)/etc/default/ringcached; fi

uninstall:
	rm -f $(INSTALLED)

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
