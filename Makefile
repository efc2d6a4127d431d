# A thin wrapper over CMake: `make run` and `make test` do all the set-up.
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= 2
FUZZ_BUILD ?= build-fuzz
# `make fuzz`: seconds per harness; `make test` runs each for FUZZ_TEST_SECONDS.
FUZZ_SECONDS      ?= 60
FUZZ_TEST_SECONDS ?= 15
FUZZERS    = chunked jwt wav csv router dispatch http websocket ingest log elevenlabs static pg_rewrite store_url
# `make install`: where (PREFIX) and under which staging root (DESTDIR, for packaging).
PREFIX     ?= /usr/local
DESTDIR    ?=

.PHONY: all deps test-deps build asan fuzz-build fuzz run demo cluster test check bench install clean

all: build

deps:
	@./.ci/install-deps

test-deps:
	@./.ci/install-deps --test

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

asan: test-deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DQC_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)

# libFuzzer harnesses (spec/fuzz/), clang with ASan + UBSan, in a build directory of their own.
fuzz-build: test-deps
	@cmake -S . -B $(FUZZ_BUILD) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DQC_SANITIZE=ON -DQC_FUZZ=ON -DQC_FUZZ_SECONDS=$(FUZZ_TEST_SECONDS) >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzzers

# Each harness in turn for FUZZ_SECONDS, growing its corpus in $(FUZZ_BUILD)/fuzz/NAME/corpus;
# a finding is saved in $(FUZZ_BUILD)/fuzz/NAME/artifacts/ and stops the run.
fuzz: fuzz-build
	@for f in $(FUZZERS); do \
	  echo "fuzz: $$f for $(FUZZ_SECONDS) s"; \
	  dict=""; [ -f spec/fuzz/$$f.dict ] && dict="-dict=spec/fuzz/$$f.dict"; \
	  ./$(FUZZ_BUILD)/fuzz_$$f -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
	    -rss_limit_mb=2048 -print_final_stats=1 $$dict \
	    -artifact_prefix=$(FUZZ_BUILD)/fuzz/$$f/artifacts/ \
	    $(FUZZ_BUILD)/fuzz/$$f/corpus spec/fuzz/corpus/$$f || exit 1; \
	done

run: build
	./$(BUILD)/quantcoach serve

# N instances on consecutive ports from QC_PORT sharing a throwaway PostgreSQL (README,
# "Several instances"); Ctrl-C stops them all.
N       ?= 3
QC_PORT ?= 8000
cluster: build
	@N=$(N) QC_PORT=$(QC_PORT) QC_BIN=$(CURDIR)/$(BUILD)/quantcoach ./scripts/cluster.sh

# A two-speaker interview played through /ingest into a server with the embedded defaults
# (no LiveKit, no keys): open the console address it prints (README, Demo). festival and
# sox come with the test packages.
demo: test-deps build
	@QC_BIN=$(CURDIR)/$(BUILD)/quantcoach ./spec/support/demo.sh

# Every test twice: the release build, then under ASan + UBSan (in each, the busted specs run
# a second time against a throwaway PostgreSQL: ctest's pg_* entries); then a short run of each
# fuzz harness and its fixtures.
test: test-deps build asan fuzz-build
	cd $(BUILD) && ctest --output-on-failure
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure
	cd $(FUZZ_BUILD) && ctest -L fuzz --output-on-failure

# Installs into $(DESTDIR)$(PREFIX): bin/, share/quantcoach/{scripts,policies,web}, the man
# page and the systemd unit (README, Install). Uses $(BUILD) as it is configured (a fresh
# one is a release build); installs nothing it needs first, so it suits a packaging chroot.
install:
	@cmake -S . -B $(BUILD) -DCMAKE_INSTALL_PREFIX=$(PREFIX) \
	  $(if $(wildcard $(BUILD)/CMakeCache.txt),,-DCMAKE_BUILD_TYPE=RelWithDebInfo) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)
	@DESTDIR=$(DESTDIR) cmake --install $(BUILD)

check: build
	./$(BUILD)/quantcoach check

bench: build
	@./.ci/install-deps --bench
	./bench/run

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
