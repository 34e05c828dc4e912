"""`make lab-cluster`: the site of several nodes (lab/cluster/site.py) and its failure drills.

Prints the site's nodes and addresses, two calls through it, then per drill what happened to
each call, calls placed and lost, the time from the fault to the first good call, and each
promise checked. Every namespace (and so every veth) is removed at the end, failed or not;
one a crashed run left behind is removed at the start. Exit 0 when every drill passed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from lab.cluster.drills import DRILLS, DrillReport
from lab.cluster.media_failover import MEDIA_ADDRESSES, redis_binary
from lab.cluster.postgres import server_bin
from lab.cluster.site import ClusterSite
from lab.cluster.topology import our_namespaces, remove_leftovers
from lab.netns import unavailable_reason
from lab.processes import LabError


def missing() -> str | None:
    """Why the cluster lab cannot run here, or None."""
    reason = unavailable_reason()
    if reason:
        return reason
    for tool, package in (("rtpengine", "rtpengine-daemon"), ("haproxy", "haproxy"),
                          ("kamailio", "kamailio")):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is not installed (Debian's {package}; make lab installs it)"
    if server_bin() is None:
        return "PostgreSQL server not installed (Debian's postgresql)"
    if redis_binary() is None:
        return "redis-server is not installed (Debian's redis-server)"
    return None


def run(folder: Path, only: list[str], media_replication: bool = True) -> list[DrillReport]:
    reports = []
    with ClusterSite(folder, media_replication) as site:
        print("lab-cluster: the site, one network namespace per node on 198.18.20.0/24:")
        assert site.network is not None
        for role, node in site.network.nodes.items():
            print(f"  {role:7} {node.address:14} {node.net.name}")
        print(f"  {site.media_kind}")
        if site.redis is not None:
            print(f"  rtpengine replication: Redis on pg ({site.redis.url(0)[:-2]}), media on "
                  f"floating addresses {', '.join(f'{r} {a}' for r, a in MEDIA_ADDRESSES.items())}")
        print(f"  Meta resolves {site.sip_domain} to "
              f"{', '.join(site.new_call().hosts)} ({site.hosts_file})")
        for _ in range(2):
            call = site.whole_call()
            media = site.business_saw(call.wacid, "invite") or "none"
            print(f"  call {call.line()}; business node {media}"
                  f"{'' if call.good else ' [FAIL]'}")
        for name, drill in DRILLS:
            if only and name not in only:
                continue
            report = drill(site)
            reports.append(report)
            print()
            print("\n".join(report.lines()), flush=True)
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make lab-cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--drill", action="append", choices=[name for name, _ in DRILLS],
                        default=[], help="run only this drill (repeatable)")
    parser.add_argument("--keep", type=Path, help="keep the logs in this folder")
    parser.add_argument("--no-media-replication", action="store_true",
                        help="no rtpengine Redis replication nor floating media addresses "
                        "(each edge's calls' media dies with it)")
    args = parser.parse_args(argv)
    reason = missing()
    if reason:
        print(f"lab-cluster cannot run: {reason}")
        return 2
    left = remove_leftovers()
    if left:
        print(f"lab-cluster: removed namespaces a crashed run left: {', '.join(left)}")
    folder = args.keep or Path(tempfile.mkdtemp(prefix="wa-sip-cluster-"))
    try:
        reports = run(folder, args.drill, not args.no_media_replication)
    except LabError as error:
        print(f"lab-cluster: the site did not start: {error}")
        return 1
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
        remaining = our_namespaces()
        print(f"\nlab-cluster: namespaces left: {', '.join(remaining) or 'none'}")
    passed = sum(r.passed for r in reports)
    pending = sum(not ok for r in reports for _, ok in r.not_built)
    print(f"lab-cluster: {passed} of {len(reports)} drills passed"
          + (f"; {pending} promise(s) not built yet" if pending else ""))
    return 0 if passed == len(reports) else 1


if __name__ == "__main__":
    sys.exit(main())
