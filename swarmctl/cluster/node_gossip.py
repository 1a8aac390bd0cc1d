"""Gossip set-up for swarmctl nodes: the key derived from the cluster secret, and the bind address."""

from __future__ import annotations

import socket
from typing import Any

from swarmctl.cluster.gossip import GossipNode
from swarmctl.security import PacketCipher, derive_key, key_id

KEY_PURPOSE = "gossip"  # HKDF purpose: the gossip key is derived from the cluster secret


def generation_key(secret: bytes, generation: int) -> bytes:
    """Return the gossip key of ``generation``: 0 is the original key, N uses the HKDF purpose ``gossip/N``."""
    return derive_key(secret, KEY_PURPOSE if generation == 0 else f"{KEY_PURPOSE}/{generation}")


def apply_keyring(cipher: PacketCipher, secret: bytes, generations: list[int], primary: int) -> None:
    """Make ``cipher`` open packets of every generation in ``generations`` and seal with ``primary``.

    New keys are installed before the sealing key changes and old ones removed after, so a
    packet sealed with any listed generation still opens while the change is under way.
    """
    keys = {generation: generation_key(secret, generation) for generation in {*generations, primary}}
    for key in keys.values():
        cipher.install(key)
    cipher.use(keys[primary])
    kept_ids = {key_id(key) for key in keys.values()}
    for installed in cipher.installed_keys():
        if key_id(installed) not in kept_ids:
            cipher.remove(installed)


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
