"""`python -m healthchecks http URL | tcp HOST PORT | redis HOST PORT`: exit 0 when healthy.

One line on stdout says what was seen; Docker keeps it in the container's health log, where
`orbisctl doctor` shows it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from healthchecks import probes


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m healthchecks", description=__doc__)
    parser.add_argument("--timeout", type=float, default=probes.DEFAULT_TIMEOUT)
    sub = parser.add_subparsers(dest="probe", required=True)
    http = sub.add_parser("http", help="GET a URL; healthy on a 2xx status")
    http.add_argument("url")
    http.add_argument("--ca-file", help="CA bundle to verify an https URL against")
    tcp = sub.add_parser("tcp", help="healthy when HOST:PORT accepts a connection")
    tcp.add_argument("host")
    tcp.add_argument("port", type=int)
    redis = sub.add_parser("redis", help="AUTH + PING; healthy on PONG")
    redis.add_argument("host")
    redis.add_argument("port", type=int)
    redis.add_argument("--user")
    redis.add_argument("--password-file", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.probe == "http":
        result = probes.http(args.url, timeout=args.timeout, ca_file=args.ca_file)
    elif args.probe == "tcp":
        result = probes.tcp(args.host, args.port, timeout=args.timeout)
    else:
        password = None
        if args.password_file is not None:
            try:
                password = args.password_file.read_text(encoding="utf-8").splitlines()[0]
            except (OSError, IndexError) as exc:
                print(f"cannot read {args.password_file}: {exc}")
                return 1
        result = probes.redis_ping(
            args.host, args.port, user=args.user, password=password, timeout=args.timeout
        )
    print(result.detail)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
