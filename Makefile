# A thin wrapper over CMake: `make run` and `make test` do all the set-up.
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= 2

.PHONY: all deps test-deps build asan run test check bench clean

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

run: build
	./$(BUILD)/quantcoach serve

# Every test twice: the release build, then under ASan + UBSan.
test: test-deps build asan
	cd $(BUILD) && ctest --output-on-failure
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure

check: build
	./$(BUILD)/quantcoach check

bench: build
	@./.ci/install-deps --bench
	./bench/run

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
