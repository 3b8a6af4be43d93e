"""Serve the region flow as a deployment from this process (one machine, no work pool needed).

    python -m flows.serve --name tenerife-nightly --cron "0 3 * * *" \\
        --params '{"bbox": [-16.2, 28.3, -16.1, 28.4], "dates": "last 30 days", "catalog": "earth-search",
                   "out": "cubes/tenerife-{end}.zarr"}'

The process polls the Prefect API (``PREFECT_API_URL``) and runs each scheduled or triggered flow
run in a subprocess until it is stopped. For work pools and Kubernetes see ``prefect.yaml``.
"""

from __future__ import annotations

import argparse
import json
import sys

from srcube.flows.region import region_flow


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True, help="deployment name (the flow is srcube-region)")
    ap.add_argument("--cron", help="cron schedule, e.g. '0 3 * * *' (UTC unless --timezone)")
    ap.add_argument("--timezone", default="UTC")
    ap.add_argument("--params", default="{}", help="default flow parameters as JSON")
    ap.add_argument("--limit", type=int, default=None, help="flow runs at a time (default: no limit)")
    args = ap.parse_args(argv)
    try:
        params = json.loads(args.params)
    except json.JSONDecodeError as exc:
        ap.error(f"--params is not JSON: {exc}")
    if not isinstance(params, dict):
        ap.error("--params must be a JSON object")
    schedule = None
    if args.cron:
        from prefect.schedules import Cron

        schedule = Cron(args.cron, timezone=args.timezone)
    region_flow.serve(name=args.name, parameters=params, schedule=schedule, limit=args.limit,
                      print_starting_message=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
