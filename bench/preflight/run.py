"""Bench: call-permission pre-flight within Graph's rate limit, and what it adds to originate.

Three Graph stand-ins (``python -m lab.graph_standin``, each its own process): the product's,
with Meta's limit on call_permissions (``--rate`` 100 requests/s per app, token bucket of
``--burst``, HTTP 400 / error 613 past it); one without a limit (the raw reference); one with
the limit for an unpaced client (the contrast). The Event Socket stand-in (``python -m
lab.esl_standin``) plays FreeSWITCH and Meta answering every BIC, so no FreeSWITCH is needed.

1. ``--users`` distinct granted users checked at once through the product's pre-flight (paced
   at ``[esl.preflight] graph_rate``, cached ``cache_s``), then again from the cache; beside it
   the raw GETs/s without the limit and the 613s an unpaced client collects with it.
2. ``wa-esl originate`` with pre-flight vs ``--force`` (``--rounds`` each, in process), and the
   controller's originate API: force, cache miss, cache hit (``--rounds`` each).

``errors`` = refused verdicts + every answer of the product's Graph stand-in that was a 613
(the product must pace itself, never be refused) + calls not answered. The last line is
``RESULT key=value ...``; exit 1 when ``errors`` is not 0 or the paced rate passed the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from esl.site import load_controller_settings
from lab.graph_standin.seed import seeded_number, seeded_user

from .children import ESL_PASSWORD, Child, start_esl, start_graph, stop, token_file
from .lookups import PreflightRun, RawRun, product_lookups, raw_gets
from .originate import Timings, api_originates, command_originates, percentile


def write_site(folder: Path, graph_url: str, esl_address: str, phone_number_id: str,
               business_number: str, token: Path, graph_rate: float | None) -> Path:
    """An [esl]-only site file, as `wa-esl -c` reads it."""
    host, _, port = esl_address.rpartition(":")
    preflight = f"[preflight]\ngraph_rate = {graph_rate}\n" if graph_rate is not None else ""
    path = folder / "esl.toml"
    path.write_text(
        f'cdr_db = "{folder / "cdr.sqlite3"}"\n'
        f'[freeswitch]\nhost = "{host}"\nport = {port}\npassword = "{ESL_PASSWORD}"\n'
        f'[listen]\nhost = "127.0.0.1"\nport = 0\n'
        f'[[numbers]]\nbusiness_number = "{business_number}"\n'
        f'phone_number_id = "{phone_number_id}"\nsrtp_mode = "SDES"\n'
        f'[graph]\nbase_url = "{graph_url}"\ntoken_file = "{token}"\n{preflight}',
        encoding="utf-8")
    return path


def ms(values: list[float], fraction: float) -> str:
    return f"{percentile(values, fraction):.2f}"


def print_timings(label: str, timings: Timings, reference: str) -> None:
    base = timings.samples.get(reference, [])
    for variant, values in timings.samples.items():
        added = ""
        if variant != reference and base:
            added = (f"; added p50 {percentile(values, .5) - percentile(base, .5):+.2f} ms, "
                     f"p99 {percentile(values, .99) - percentile(base, .99):+.2f} ms")
        print(f"{label} {variant:<9} n={len(values):<4} p50 {ms(values, .5)} ms  "
              f"p99 {ms(values, .99)} ms  failed {timings.failed.get(variant, 0)}{added}")
    for note in timings.notes:
        print(f"  note: {note}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000, help="distinct users checked at once")
    parser.add_argument("--raw", type=int, default=2000, help="raw GETs for the reference")
    parser.add_argument("--unpaced", type=int, default=300, help="unpaced GETs at the limit")
    parser.add_argument("--rounds", type=int, default=200, help="originates per variant")
    parser.add_argument("--rate", type=float, default=100.0, help="Graph's limit, requests/s")
    parser.add_argument("--burst", type=int, default=10, help="the limit's token bucket")
    parser.add_argument("--graph-rate", type=float, default=None,
                        help="[esl.preflight] graph_rate (default: the product's default)")
    parser.add_argument("--max-seconds", type=float, default=240.0, help="time bound")
    args = parser.parse_args()
    if min(args.users, args.raw, args.unpaced, args.rounds) < 1:
        parser.error("counts must be at least 1")
    deadline = time.monotonic() + args.max_seconds
    business_number, phone_number_id = seeded_number(0)
    originate_users = 4 * args.rounds  # command: 2 a round; api: force + miss a round
    granted = args.users + originate_users
    users = [seeded_user(i) for i in range(args.users)]
    call_users = [seeded_user(args.users + i) for i in range(originate_users)]
    children: list[Child] = []
    stats: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-preflight-") as scratch:
        folder = Path(scratch)
        token = token_file(folder)
        try:
            bound = args.max_seconds + 30
            product = start_graph("Graph stand-in (limited)", token, granted_users=granted,
                                  rate=args.rate, burst=args.burst, max_seconds=bound)
            children.append(product)
            unlimited = start_graph("Graph stand-in (no limit)", token, granted_users=granted,
                                    max_seconds=bound)
            children.append(unlimited)
            contrast = start_graph("Graph stand-in (contrast)", token, granted_users=granted,
                                   rate=args.rate, burst=args.burst, max_seconds=bound)
            children.append(contrast)
            esl = start_esl(max_seconds=bound)
            children.append(esl)
            site = write_site(folder, product.address, esl.address, phone_number_id,
                              business_number, token, args.graph_rate)
            settings = load_controller_settings(site)
            left = max(1.0, deadline - time.monotonic())
            raw: RawRun = asyncio.run(raw_gets(unlimited.address, phone_number_id, users,
                                               args.raw, left))
            paced: PreflightRun = asyncio.run(product_lookups(settings, business_number, users,
                                                              max(1.0, deadline - time.monotonic())))
            unpaced: RawRun = asyncio.run(raw_gets(contrast.address, phone_number_id, users,
                                                   args.unpaced, max(1.0, deadline - time.monotonic()),
                                                   attempts=1))
            half = len(call_users) // 2
            command = command_originates(site, business_number, call_users[:half], args.rounds,
                                         deadline)
            api, hits = asyncio.run(api_originates(settings, business_number, call_users[half:],
                                                   args.rounds, deadline))
        finally:
            for child in children:
                stats[child.name] = stop(child)
    limited_613 = stats.get("Graph stand-in (limited)", {}).get("rate_limited", -1)
    refused = sum(paced.refused.values())
    failed = command.failures + api.failures
    errors = refused + max(limited_613, 0) + failed + (1 if limited_613 < 0 else 0)
    rate = settings.preflight.graph_rate
    print(f"Graph limit:    {args.rate:.0f} requests/s per app (token bucket {args.burst}; "
          f"613 past it); pre-flight graph_rate {rate:g}/s, cache_s {settings.preflight.cache_s:g}")
    print(f"pre-flight:     {paced.checks} users at once in {paced.wall_s:.2f} s: "
          f"{paced.graph_requests} Graph lookups, {paced.lookups_per_s:.1f} lookups/s "
          f"({paced.lookups_per_s / args.rate:.2f} of the limit); refused {paced.refused or 0}")
    print(f"  again cached: {paced.cached_checks} checks in {paced.cached_wall_s:.3f} s "
          f"({paced.cached_per_s:.0f}/s, {paced.cache_hits} cache hits, no Graph request)")
    print(f"  613s the product's stand-in sent: {limited_613}")
    print(f"raw reference:  {raw.requests} GETs, 16 connections, no limit: {raw.per_s:.0f}/s "
          f"(ok {raw.ok}, errors {raw.rate_limited + raw.other_errors})")
    print(f"unpaced at the limit: {unpaced.requests} GETs in {unpaced.wall_s:.2f} s: "
          f"{unpaced.rate_limited} answered 613, {unpaced.ok} ok")
    print_timings("wa-esl originate", command, "force")
    print_timings("controller api  ", api, "force")
    print(f"  controller pre-flight cache hits: {hits}")
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"CPU:            bench {own.ru_utime + own.ru_stime:.1f} s, stand-ins "
          f"{kids.ru_utime + kids.ru_stime:.1f} s; load average {os.getloadavg()[0]:.2f}")
    force_cmd, pre_cmd = command.samples.get("force", []), command.samples.get("preflight", [])
    force_api = api.samples.get("force", [])
    miss, hit = api.samples.get("miss", []), api.samples.get("hit", [])

    def added(values: list[float], base: list[float], fraction: float) -> str:
        return f"{percentile(values, fraction) - percentile(base, fraction):.2f}"

    print(f"RESULT users={paced.checks} lookups_per_s={paced.lookups_per_s:.1f} "
          f"limit_per_s={args.rate:.0f} ratio_to_limit={paced.lookups_per_s / args.rate:.2f} "
          f"raw_gets_per_s={raw.per_s:.0f} ratio_to_raw={paced.lookups_per_s / raw.per_s:.3f} "
          f"errors={errors} product_613={limited_613} unpaced_613={unpaced.rate_limited} "
          f"cached_checks_per_s={paced.cached_per_s:.0f} "
          f"originate_force_p50_ms={ms(force_cmd, .5)} originate_force_p99_ms={ms(force_cmd, .99)} "
          f"originate_preflight_p50_ms={ms(pre_cmd, .5)} "
          f"originate_preflight_p99_ms={ms(pre_cmd, .99)} "
          f"originate_added_p50_ms={added(pre_cmd, force_cmd, .5)} "
          f"originate_added_p99_ms={added(pre_cmd, force_cmd, .99)} "
          f"api_force_p50_ms={ms(force_api, .5)} api_miss_p50_ms={ms(miss, .5)} "
          f"api_miss_p99_ms={ms(miss, .99)} api_hit_p50_ms={ms(hit, .5)} "
          f"api_hit_p99_ms={ms(hit, .99)} api_added_miss_p50_ms={added(miss, force_api, .5)} "
          f"api_added_hit_p50_ms={added(hit, force_api, .5)}")
    return 1 if errors or paced.lookups_per_s > args.rate else 0


if __name__ == "__main__":
    sys.exit(main())
