"""Gossip set-up for swarmctl nodes: the key derived from the cluster secret, and the bind address."""

from __future__ import annotations

import socket
from typing import Any

from swarmctl.cluster.gossip import GossipNode
from swarmctl.security import PacketCipher, derive_key

KEY_PURPOSE = "gossip"  # HKDF purpose: the gossip key is derived from the cluster secret


def gossip_node(
    node_id: str, bind: tuple[str, int], meta: dict[str, Any], secret: bytes, advertise: tuple[str, int] | None = None
) -> GossipNode:
    return GossipNode(node_id, bind, meta, PacketCipher([derive_key(secret, KEY_PURPOSE)]), advertise=advertise)


def local_address_towards(host: str, port: int) -> str:
    """Return this machine's IP address on the route to ``host``.

    Connecting a UDP socket only selects the route; it sends no packet.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((host, port))
        except OSError:
            return "127.0.0.1"
        return probe.getsockname()[0]
