"""``runarchive ui``: serve the run viewer on 127.0.0.1 until interrupted."""

from __future__ import annotations

import argparse

from runarchive.reader import Reader
from runarchive.viewer.server import make_server


def cmd_ui(args: argparse.Namespace) -> int:
    with Reader.open(args.url) as reader:
        server = make_server(reader, "127.0.0.1", args.port)
        host, port = server.server_address[:2]
        print(f"runarchive ui: http://{host!s}:{port}/  (read-only; Ctrl-C to stop)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    return 0
