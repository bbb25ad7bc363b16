"""py-libp2p (PyPI `libp2p`) as a plain rendezvous client of a Roost node.

    python rendezvous_client.py '<json arguments>'

Used exactly as py-libp2p's own users use it: `new_host()` with its defaults, connect to the
rendezvous point by its multiaddr, then `RendezvousDiscovery` / `RendezvousClient` calls. It
speaks no Waku protocol. Prints JSON lines on stdout: {"event": "registered", ...},
{"event": "ready"} when it waits for the Rust side (a line on stdin), then
{"event": "result", ...}; {"event": "error", ...} on failure. Diagnostics go to stderr.

Arguments: point (the node's /ip4/.../tcp/.../p2p/... address), namespace, ttl (seconds),
page (DISCOVER limit, so paging with a cookie is exercised), linger (seconds to stay
connected before the last discover, to show the node keeps the connection).
"""

import json
import sys

import multiaddr
import trio

from libp2p import new_host
from libp2p.discovery.rendezvous import RendezvousDiscovery
from libp2p.peer.peerinfo import info_from_p2p_addr


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


async def wait_for_go():
    """Blocks until the Rust side writes a line on stdin."""
    await trio.to_thread.run_sync(sys.stdin.readline)


async def run(args):
    host = new_host()
    listen = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
    async with host.run(listen_addrs=[listen]), trio.open_nursery() as nursery:
        point = info_from_p2p_addr(multiaddr.Multiaddr(args["point"]))
        await host.connect(point)
        discovery = RendezvousDiscovery(host, point.peer_id)
        nursery.start_soon(discovery.run)
        namespace = args["namespace"]

        ttl = await discovery.advertise(namespace, args.get("ttl", 7200))
        emit("registered", peer=str(host.get_id()), ttl=ttl,
             addrs=[str(a) for a in host.get_addrs()])

        # Page through everyone registered, `page` at a time, following the cookie.
        client = discovery.client
        pages = []
        cookie = b""
        while True:
            peers, cookie = await client.discover(namespace, args["page"], cookie)
            pages.append([str(p.peer_id) for p in peers])
            if len(peers) < args["page"] or len(pages) > 100:
                break
        emit("ready", pages=pages)
        await wait_for_go()

        # Stay connected for a while: the node must not drop a peer without Waku metadata.
        await trio.sleep(args.get("linger", 2))
        connected = point.peer_id in host.get_network().connections
        # A cookie from the last page: only registrations newer than it.
        newer, _ = await client.discover(namespace, args["page"], cookie)

        await discovery.unregister(namespace)
        emit("result", connected=connected, newer=[str(p.peer_id) for p in newer])
        nursery.cancel_scope.cancel()


def main():
    args = json.loads(sys.argv[1] if len(sys.argv) > 1 else "{}")
    try:
        trio.run(run, args)
    except BaseException as error:  # report every failure to the test, then exit non-zero
        print(f"[py-libp2p] failed: {error!r}", file=sys.stderr)
        emit("error", message=repr(error))
        sys.exit(1)


if __name__ == "__main__":
    main()
