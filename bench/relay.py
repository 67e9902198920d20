"""Benchmark-only reference: the old front of a deployed app, a byte relay.

A verbatim copy of ``warptasks/scripts/proxy.py`` as it was before the Caddy
front (docs/front.md) replaced it and it left the product. It is kept here
only so ``bench`` can compare the new front with the old one; nothing in
warptasks runs it.

What it did: listen on the public port and relay each new connection to the
live release's server. The live release is wherever ``<path>/current``
points, and its server's port is in that release's ``.warp/deploy.json``.
Switching ``current`` (one atomic rename) therefore sends every *new*
connection to the new server, while connections already relayed to the old
one finish there. It relays bytes, not HTTP, so it adds no parsing and no
buffering of its own.

Usage: python3 relay.py LISTEN_ADDRESS PORT DEPLOY_PATH
"""

import asyncio
import json
import os
import signal
import sys

_cache = {"release": None, "port": None}


def backend_port(root):
    release = os.path.realpath(os.path.join(root, "current"))
    if release != _cache["release"]:
        try:
            with open(os.path.join(release, ".warp", "deploy.json"), encoding="utf-8") as handle:
                port = int(json.load(handle)["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return _cache["port"]
        _cache.update(release=release, port=port)
    return _cache["port"]


async def pump(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            if writer.can_write_eof():
                writer.write_eof()
        except (OSError, RuntimeError):
            pass


async def relay(root, client_reader, client_writer):
    port = backend_port(root)
    try:
        if port is None:
            raise OSError("no live release")
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as error:
        sys.stderr.write(f"warp-proxy: cannot reach the live release (port {port}): {error}\n")
        client_writer.close()
        return
    try:
        await asyncio.gather(pump(client_reader, server_writer), pump(server_reader, client_writer))
    finally:
        for writer in (server_writer, client_writer):
            writer.close()


async def main(listen, port, root):
    server = await asyncio.start_server(lambda r, w: relay(root, r, w), listen, port, reuse_address=True, backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sys.stderr.write(f"warp-proxy: {listen}:{port} -> {root}/current\n")
    sys.stderr.flush()
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
