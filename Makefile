# ringcache - one flat Makefile.
#
#   make            build build/ringcached (and the unit-test runner, load generator)
#   make run        install missing dependencies, build, run on 127.0.0.1:11211
#   make test       install missing dependencies, build, run every test
#   make asan/tsan  the same binaries with sanitizers, under build/asan, build/tsan
#   make clean

BUILD    ?= build
CC       ?= gcc
SANFLAGS ?=
OPT      ?= -O2
CFLAGS   := -std=c11 -Wall -Wextra -Werror $(OPT) -g -D_GNU_SOURCE -I. -MMD -MP $(SANFLAGS) $(EXTRA_CFLAGS)
LDFLAGS  := $(SANFLAGS)
LIBS     := -luring -lmimalloc -lxxhash -lsystemd -lpthread

SHARD_SRC  := $(wildcard shard/*.c)
NET_SRC    := $(wildcard net/*.c)
DAEMON_SRC := $(filter-out daemon/main.c,$(wildcard daemon/*.c))
UNIT_SRC   := $(wildcard tests/unit/*.c)

obj = $(patsubst %.c,$(BUILD)/%.o,$(1))

BIN      := $(BUILD)/ringcached
UNIT_BIN := $(BUILD)/unit_tests

PY       := /usr/bin/python3
PORT     ?= 11211

.PHONY: all run test unit integration asan tsan hooks deps clean
all: $(BIN) $(UNIT_BIN)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BIN): $(call obj,daemon/main.c $(DAEMON_SRC) $(NET_SRC) $(SHARD_SRC))
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(UNIT_BIN): $(call obj,$(UNIT_SRC) $(DAEMON_SRC) $(NET_SRC) $(SHARD_SRC))
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS) -lcunit

deps:
	@scripts/deps.sh

run: deps
	@$(MAKE) --no-print-directory all
	./$(BIN) -l 127.0.0.1 -p $(PORT)

unit: $(UNIT_BIN)
	./$(UNIT_BIN)

integration: $(BIN)
	RINGCACHED=$(abspath $(BIN)) $(PY) -m pytest -q -p no:cacheprovider tests/integration

test: deps
	@$(MAKE) --no-print-directory all
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
	@$(MAKE) --no-print-directory BUILD=build/hooks EXTRA_CFLAGS=-DRINGCACHE_TEST_HOOKS $(BUILD)/hooks/ringcached

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
