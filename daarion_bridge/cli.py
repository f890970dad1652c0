"""`daarion-bridge`: generate the registration, or run the bridge.

Operator mistakes end the process with one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from . import __version__
from .config import GENERATE, TOKEN_KEYS, Config, generate_tokens, load_config, token_value
from .errors import OperatorError
from .matrix.registration import PLACEHOLDER_TOKEN, check_registration, write_registration
from .process import configure_logging, event_loop_factory

log = logging.getLogger("daarion")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="daarion-bridge", description="Matrix appservice for the DAARION platform"
    )
    parser.add_argument("-c", "--config", type=Path, default=Path("config.yaml"))
    parser.add_argument("-r", "--registration", type=Path, default=Path("registration.yaml"))
    parser.add_argument(
        "-g",
        "--generate-registration",
        action="store_true",
        help="write the registration (and any `generate` tokens into the config), then exit",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    letters = commands.add_parser("dead-letters", help="list or replay events set aside")
    letter_commands = letters.add_subparsers(dest="action", required=True, metavar="ACTION")
    letter_commands.add_parser("list", help="one line per dead letter, oldest first")
    replay = letter_commands.add_parser("replay", help="run dead letters through ingest again")
    replay.add_argument("ids", type=int, nargs="*", help="dead letter ids (default: all)")
    return parser.parse_args(argv)


def generate(config_path: Path, registration_path: Path) -> None:
    if generate_tokens(config_path):
        print(f"Wrote new appservice tokens into {config_path}")
    config = load_config(config_path)
    write_registration(config, registration_path)
    print(
        f"Wrote {registration_path}. Add it to app_service_config_files in the homeserver "
        "config and restart the homeserver."
    )


def check_tokens(config: Config) -> None:
    for section, key in TOKEN_KEYS:
        value = token_value(config, section, key)
        if value == GENERATE:
            raise OperatorError(
                f"{config.path}: {section}.{key} is still `generate`; run daarion-bridge -g first"
            )
        if value == PLACEHOLDER_TOKEN:
            raise OperatorError(
                f"{config.path}: {section}.{key} is the repository placeholder; "
                "set `generate` and run daarion-bridge -g"
            )


async def serve(config: Config, registration_path: Path) -> None:
    from .app import Bridge  # heavy imports only when running

    bridge = Bridge(config, registration_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, bridge.request_reload)
    starting = asyncio.create_task(bridge.start())
    stopping = asyncio.create_task(stop.wait())
    try:
        # A signal while starting (e.g. waiting for the homeserver) stops at once.
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()
            await stopping
        log.info("Stopping")
    finally:
        for task in (starting, stopping):
            task.cancel()
        await asyncio.gather(starting, stopping, return_exceptions=True)
        await bridge.stop()


def run(args: argparse.Namespace) -> None:
    if args.generate_registration:
        generate(args.config, args.registration)
        return
    config = load_config(args.config)
    if args.command == "dead-letters":
        from .ingest import dead_letters

        if args.action == "list":
            lines = asyncio.run(dead_letters.list_dead_letters(config))
        else:
            lines = asyncio.run(dead_letters.replay_dead_letters(config, args.ids or None))
        print("\n".join(lines) if lines else "no dead letters")
        return
    check_tokens(config)
    configure_logging(config.logging, config.path)
    for warning in check_registration(config, args.registration):
        log.warning(warning)
    if config.path.stat().st_mode & 0o004:
        log.warning("%s holds tokens and is world-readable; chmod o-r it", config.path)
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(serve(config, args.registration))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except OperatorError as e:
        print(f"daarion-bridge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
