"""`cdeq keys hash` (a key on stdin → its sha256 entry for CDEQ_API__KEYS) and `cdeq keys
check` (the key configuration, one line per problem, exit 2). Neither ever prints a key."""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import sys
from typing import Any

from app.cli.common import settings_from
from app.errors import InvalidInput


def add_keys_commands(sub: Any) -> None:
    keys = sub.add_parser("keys", help="API keys: hash one for the settings, check the settings")
    actions = keys.add_subparsers(dest="keys_command", required=True)

    p = actions.add_parser(
        "hash",
        help="read a key on stdin, print its entry for CDEQ_API__KEYS with only its sha256",
    )
    p.add_argument("--name", default="key", help="the key's name in logs and metrics")
    p.add_argument("--access", choices=("read", "write", "admin"), default="read")
    p.add_argument(
        "--collection",
        action="append",
        dest="collections",
        metavar="GLOB",
        help="a collection (glob) the key may reach; repeat for more; none = every collection",
    )
    p.set_defaults(func=cmd_keys_hash)

    p = actions.add_parser(
        "check",
        help="validate CDEQ_API__KEYS and CDEQ_API__READ_ONLY_KEYS: exit 2 with one line per "
        "problem",
    )
    p.add_argument("--host", help="check as if serving on this address (default CDEQ_API__HOST)")
    p.set_defaults(func=cmd_keys_check)


def _read_key() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("API key (not echoed): ")
    text = sys.stdin.read()
    return text[:-1] if text.endswith("\n") else text  # `echo key |` adds one newline


def cmd_keys_hash(args: argparse.Namespace) -> int:
    from app.api.auth import weak_key
    from app.config import ApiKey

    key = _read_key().removesuffix("\r")
    if not key.strip() or key != key.strip():
        raise InvalidInput("stdin: the key is empty, or has surrounding whitespace", field="key")
    entry: dict[str, Any] = {
        "name": args.name,
        "sha256": hashlib.sha256(key.encode("utf-8")).hexdigest(),
        "access": args.access,
    }
    if args.collections:
        entry["collections"] = args.collections
    try:
        ApiKey.model_validate(entry)
    except Exception as exc:  # pydantic's ValidationError: name or globs
        from pydantic import ValidationError

        if not isinstance(exc, ValidationError):
            raise
        problems = [
            f"--{str(e['loc'][0]).rstrip('s')}: {str(e['msg']).removeprefix('Value error, ')}"
            for e in exc.errors(include_url=False)
        ]
        raise InvalidInput(problems, field="key") from None
    if weakness := weak_key(key):
        print(f"warning: this key is {weakness}; refused off loopback", file=sys.stderr)
    print(json.dumps(entry))
    return 0


def cmd_keys_check(args: argparse.Namespace) -> int:
    from app.api.auth import KeyRing, exposure_problems, key_problems, weak_keys

    api = settings_from(args).api  # unknown fields, bad globs, bad hashes: InvalidInput here
    if args.host:
        api.host = args.host
    ring = KeyRing(api.key_entries())
    ring.weak = weak_keys(api)
    problems = key_problems(api) + exposure_problems(api, ring)
    if problems:
        raise InvalidInput(problems, field="api.keys")
    entries = api.key_entries()
    for entry in entries:
        scope = ", ".join(entry.collections) if entry.collections is not None else "*"
        stored = "key" if entry.key is not None else "sha256, so its strength is not checked"
        print(f"{entry.name}: {entry.access} on {scope} (stored as {stored})")
    for weak in weak_keys(api):
        print(f"warning: {weak} (accepted on loopback only)", file=sys.stderr)
    if not entries:
        print(f"no API keys: the API is open (allowed on {api.host})")
    else:
        print(f"ok: {len(entries)} key(s)")
    return 0
