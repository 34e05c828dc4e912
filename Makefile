# wa-sip: the two commands a newcomer needs are `make lab` and `make test`.
# Both install what is missing (Debian packages with apt-get, Python packages into .venv) and
# build nothing: Kamailio is Debian's (or a newer one you have), FreeSWITCH is yours if any.

SHELL := /bin/bash
VENV := .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: lab lab-cluster test system-deps python-deps lint typecheck unit clean bench-esl bench-sync bench-edge bench-edge-site bench-abuse bench-media-patch bench-media bench-rtpengine bench-preflight

lab: system-deps python-deps
	$(VENV)/bin/python -m lab $(LAB_ARGS)

# A site of several nodes on this machine (issue 20): two edges, two business media nodes,
# PostgreSQL and Meta's stand-ins, each in a network namespace of its own (root; all removed at
# the end), and the failure drills; ~1 min. LAB_ARGS="--drill edge --keep DIR" for one drill.
lab-cluster: system-deps python-deps
	$(VENV)/bin/python -m lab.cluster $(LAB_ARGS)

test: system-deps python-deps lint typecheck
	$(VENV)/bin/pytest -q

system-deps:
	@scripts/install-system-deps

python-deps: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $(STAMP)

lint: python-deps
	$(VENV)/bin/ruff check .

typecheck: python-deps
	$(VENV)/bin/mypy

bench-esl: python-deps
	$(VENV)/bin/python -m bench.esl.run

bench-sync: python-deps
	$(VENV)/bin/python bench/sync/run.py

# Call-permission pre-flight (issue 19): lookups/s under Graph's 100/s limit (613 past it) with
# 0 errors, and what pre-flight adds to wa-esl originate; stand-ins only, ~1 min.
bench-preflight: python-deps
	$(VENV)/bin/python -m bench.preflight.run $(BENCH_ARGS)

# matplotlib (for the plot) lives in the `bench` extra, installed here only, not for CI.
bench-edge: system-deps python-deps
	$(VENV)/bin/python -c 'import matplotlib' 2>/dev/null || $(VENV)/bin/pip install -q -e '.[bench]'
	$(VENV)/bin/python -m bench.edge.run $(BENCH_ARGS)

# A site's call rate with one KEMI edge and with two ([cluster], load split between them),
# the native reference in the same run (bench/README.md, bench-edge-site); ~6 minutes.
bench-edge-site: system-deps python-deps
	$(VENV)/bin/python -m bench.edge.site_run $(BENCH_ARGS)

# The long attack run against a loopback edge (issue 10): fuzz, TLS abuse, flood, scan; ~3 min.
bench-abuse: system-deps python-deps
	$(VENV)/bin/python -m bench.abuse.run $(BENCH_ARGS)

# DTLS with WhatsApp's ICE-lite media, a stock FreeSWITCH vs one patched with patches/freeswitch/.
# Builds nothing: both are yours (STOCK=/path/bin/freeswitch, PATCHED=... or the one
# scripts/install-freeswitch finds, which must be a build of your own with the patches applied).
bench-media-patch: system-deps python-deps
	@echo "bench-media-patch: needs a FreeSWITCH you patched yourself (patches/freeswitch/, PATCHED=... or the one install-freeswitch found) and a stock one (STOCK=...); it builds none"
	$(VENV)/bin/python -m bench.media_patch.run $(BENCH_ARGS)

# Concurrent SRTP + Opus calls on one FreeSWITCH (SDES, DTLS, Opus<->PCMU): CPU per call, loss,
# jitter, highest load with loss < 0.5 %; plot bench/media/media-bench.png; ~4 min. Then, where
# rtpengine is installed, the rtpengine path (Meta's SDES/DTLS on rtpengine, FreeSWITCH on plain
# RTP: Opus passed through, Opus<->PCMU in FreeSWITCH, Meta offering PCMU): CPU per call of both,
# loss both ways, handshake and first packet; ~3 min more.
bench-media: system-deps python-deps
	$(VENV)/bin/python -c 'import matplotlib' 2>/dev/null || $(VENV)/bin/pip install -q -e '.[bench]'
	$(VENV)/bin/python -m bench.media.run $(BENCH_ARGS)

# The same calls with Debian's rtpengine anchoring Meta's media (no FreeSWITCH): concurrent SDES
# and DTLS calls, Opus passed through, Opus <-> PCMU transcoded by rtpengine, G.711 end to end;
# rtpengine CPU per call, loss both ways, jitter, tones and DTMF checked; ~4.5 min.
bench-rtpengine: system-deps python-deps
	$(VENV)/bin/python -m bench.media.rtpengine.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
