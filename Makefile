# The two commands a newcomer needs are `make run` and `make test`.
CARGO  ?= cargo
PREFIX ?= $(HOME)/.local

.PHONY: run test deps lint bench install uninstall stress fuzz

## run: build, and run the daemon in the foreground on the default home
##      (IAPEER_HOME or ~/.iapeer); it prints where its logs are
run:
	$(CARGO) build --release
	./target/release/iapeer daemon

## test: install what the tests need (tmux, python3, faketime, chromium +
##       chromedriver, npm and the pinned real CLIs),
##       then run every test
test: deps
	$(CARGO) test

deps:
	./scripts/test-deps.sh

## lint: formatting, clippy and the API docs, warnings as errors
lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps

## bench: print the figures (appends/s, decisions/s, …)
bench: deps
	$(CARGO) bench

## stress: the long crash-consistency storm (250 daemon kills); prints its counts
stress: deps
	IAPEER_STORM_KILLS=$${IAPEER_STORM_KILLS:-250} $(CARGO) test --release --test it storm:: -- --nocapture --test-threads=1

## fuzz: a short run of every cargo-fuzz target (FUZZ_SECONDS each, default 20)
fuzz:
	./scripts/fuzz.sh $${FUZZ_SECONDS:-20}

## install: the binary into $(PREFIX)/bin, shell completions, the man page,
##          and the systemd user unit (Linux) or launchd agent (macOS)
##          pointing at it; says how to enable it
install:
	$(CARGO) install --locked --path . --root $(PREFIX)
	./scripts/install-unit.sh $(PREFIX)/bin/iapeer

## uninstall: remove what install put in place (state and logs stay)
uninstall:
	./scripts/install-unit.sh --uninstall $(PREFIX)
