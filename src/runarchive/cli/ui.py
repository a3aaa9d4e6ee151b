"""``runarchive ui``: serve the run viewer on 127.0.0.1 until interrupted."""

from __future__ import annotations

import argparse

from runarchive.errors import InvalidInputError
from runarchive.reader import Reader
from runarchive.viewer.server import make_server

HOST = "127.0.0.1"  # loopback only: the viewer shows private agent data, unauthenticated


def cmd_ui(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise InvalidInputError(f"--port {args.port} is not a port: give 1-65535, or 0 for any")
    with Reader.open(args.url) as reader:
        try:
            server = make_server(reader, HOST, args.port)
        except OSError as exc:
            raise InvalidInputError(
                f"cannot listen on {HOST}:{args.port} ({exc.strerror or exc}): give another "
                "--port, or --port 0 for any free one"
            ) from None
        host, port = server.server_address[:2]
        print(f"runarchive ui: http://{host!s}:{port}/  (read-only; Ctrl-C to stop)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    return 0
