"""The comparison server for ``bench fanout --peer websockets``: asyncio ``websockets`` + ``broadcast()``.

    python -m bench._fanout_peer --redis redis://127.0.0.1:PORT/0 --channel episode:bench

The smallest server that does the same job as our push node on the fan-out path, written the way the
websockets documentation recommends: each message read from Redis pub/sub (the same envelope our broker
publishes, parsed by the broker's own function) is encoded once into the same ``message`` frame and
handed to ``websockets.broadcast()``, which writes it to every connection synchronously. Clients send
``subscribe`` and get ``subscribed`` back (at the position the driver passes), as with ours; no tickets
(we check them only at the handshake, not on the fan-out path), no history, no user channels.
Compression is off, as on our server. uvloop is used when installed (``loop ...`` on stdout says which).

Prints ``peer listening on ws://...`` then ``ready`` on stdout; runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal
import sys
from urllib.parse import urlsplit

import msgspec
from websockets.asyncio.server import ServerConnection, broadcast, serve

from playtotv.broker._redis_subscription import decode_envelope
from playtotv.cli import READY_LINE, listening_line
from playtotv.devtools.localredis import Incomplete, encode_command, parse_reply
from playtotv.keys import channel_pubsub
from playtotv.protocol.push import encode_message_frame, encode_subscribed_frame

RECV_BYTES = 1 << 16


class Peer:
    def __init__(self, channel: str, epoch: str, offset: int) -> None:
        self.channel = channel
        # The channel's position, given by the driver (nothing is published while clients connect):
        # a client that checks offsets starts from it, as with our server.
        self.epoch = epoch
        self.offset = offset
        self.clients: set[ServerConnection] = set()

    async def handler(self, ws: ServerConnection) -> None:
        try:
            async for raw in ws:
                frame = msgspec.json.decode(raw)
                if frame.get("type") == "subscribe" and frame.get("channel") == self.channel:
                    subscribed = encode_subscribed_frame(self.channel, self.epoch, self.offset, True, [])
                    await ws.send(subscribed, text=True)
                    self.clients.add(ws)
        finally:
            self.clients.discard(ws)

    async def relay(self, redis_url: str) -> None:
        """Read Redis pub/sub (devtools' sans-IO RESP: two message types are all we need) and broadcast."""
        url = urlsplit(redis_url)
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        writer.write(encode_command("SUBSCRIBE", channel_pubsub(self.channel)))
        await writer.drain()
        buffer = b""
        while True:
            chunk = await reader.read(RECV_BYTES)
            if not chunk:
                raise ConnectionError("Redis closed the pub/sub connection")
            buffer += chunk
            while True:
                try:
                    reply, used = parse_reply(buffer)
                except Incomplete:
                    break
                buffer = buffer[used:]
                if isinstance(reply, list) and reply[0] == b"message":
                    message = decode_envelope(self.channel, reply[2])
                    payload = encode_message_frame(message.channel, message.epoch, message.offset,
                                                   message.sent_at, message.data)
                    broadcast(self.clients, payload, text=True)


async def run(redis_url: str, channel: str, bind_host: str, epoch: str, offset: int) -> None:
    peer = Peer(channel, epoch, offset)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with serve(peer.handler, bind_host, 0, compression=None, max_queue=16, backlog=4096) as server:
        port = server.sockets[0].getsockname()[1]
        relay = asyncio.create_task(peer.relay(redis_url))
        print(listening_line("peer", f"ws://{bind_host}:{port}/v1/ws"), flush=True)
        print(READY_LINE, flush=True)
        await stop.wait()
        relay.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._fanout_peer")
    parser.add_argument("--redis", required=True)
    parser.add_argument("--channel", default="episode:bench")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--epoch", required=True, help="the channel's epoch now")
    parser.add_argument("--offset", type=int, required=True, help="the channel's last offset now")
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop  # type: ignore[import-not-found]

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        print("loop uvloop", flush=True)
    except ImportError:
        print("loop asyncio", flush=True)
    asyncio.run(run(args.redis, args.channel, args.host, args.epoch, args.offset))
    return 0


if __name__ == "__main__":
    sys.exit(main())
