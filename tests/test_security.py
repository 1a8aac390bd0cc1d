"""Tests of swarmctl.security: the secret file, key derivation, packet sealing and key rotation."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
import trio

from swarmctl.cluster.gossip import GossipNode
from swarmctl.cluster.membership import MembershipConfig, MemberState
from swarmctl.errors import ProtocolError, UsageError
from swarmctl.security import (
    SEAL_OVERHEAD_BYTES,
    PacketCipher,
    derive_key,
    key_id,
    load_secret,
    new_secret,
    write_secret,
)

SECRET = b"0123456789abcdef0123456789abcdef0123456789abcdef"
KEY_A = derive_key(SECRET, "gossip")
KEY_B = derive_key(SECRET + b"-next", "gossip")
LOOPBACK = "127.0.0.1"

# Fast probes, so that a broken rotation shows within a second, but a suspicion timeout of
# 2 s, so that a test machine busy for a moment does not produce a false death.
ROTATION_CONFIG = MembershipConfig(
    probe_interval_s=0.1,
    probe_timeout_s=0.05,
    gossip_interval_s=0.05,
    suspicion_min_multiplier=20.0,
    join_retry_s=0.1,
)


# --- secret files ---------------------------------------------------------------------------


def test_load_secret_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "cluster.key"
    with pytest.raises(UsageError) as caught:
        load_secret(path)
    assert str(path) in str(caught.value)
    assert "not found" in str(caught.value)
    assert "secrets.token_hex(32)" in str(caught.value)
    assert "chmod 600" in str(caught.value)


def test_load_secret_too_short(tmp_path: Path) -> None:
    path = tmp_path / "cluster.key"
    path.write_text("short-secret\n")
    path.chmod(0o600)
    with pytest.raises(UsageError) as caught:
        load_secret(path)
    assert str(path) in str(caught.value)
    assert "at least 32" in str(caught.value)
    assert "secrets.token_hex(32)" in str(caught.value)


def test_load_secret_strips_whitespace(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "cluster.key"
    path.write_bytes(b"  " + SECRET + b"\n\n")
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="swarmctl.security"):
        assert load_secret(path) == SECRET
    assert caplog.records == []


def test_load_secret_warns_when_group_readable(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "cluster.key"
    path.write_bytes(SECRET)
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="swarmctl.security"):
        assert load_secret(path) == SECRET
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert str(path) in message
    assert "chmod 600" in message
    assert SECRET.decode() not in caplog.text


def test_write_secret_creates_private_file(tmp_path: Path) -> None:
    path = tmp_path / "cluster.key"
    write_secret(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    secret = load_secret(path)
    assert len(secret) == 64
    int(secret, 16)  # hexadecimal


def test_write_secret_refuses_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "cluster.key"
    path.write_text("keep me")
    with pytest.raises(UsageError, match="already exists"):
        write_secret(path)
    assert path.read_text() == "keep me"


def test_new_secret_is_random_hex() -> None:
    first, second = new_secret(), new_secret()
    assert len(first) == 64
    assert first != second
    int(first, 16)


# --- keys and sealing -----------------------------------------------------------------------


def test_derive_key_depends_on_secret_and_purpose() -> None:
    assert len(KEY_A) == 32
    assert derive_key(SECRET, "gossip") == KEY_A
    assert derive_key(SECRET, "tokens") != KEY_A
    assert derive_key(SECRET + b"x", "gossip") != KEY_A


def test_cipher_round_trip() -> None:
    cipher = PacketCipher([KEY_A])
    packet = cipher.seal(b"hello members")
    assert len(packet) == len(b"hello members") + SEAL_OVERHEAD_BYTES
    assert packet[1:5] == key_id(KEY_A)
    assert cipher.open(packet) == b"hello members"


def test_cipher_uses_fresh_nonces() -> None:
    cipher = PacketCipher([KEY_A])
    assert cipher.seal(b"same") != cipher.seal(b"same")


@pytest.mark.parametrize("position", [0, 1, 5, 10, 17, 20, -1])
def test_cipher_rejects_tampered_byte(position: int) -> None:
    cipher = PacketCipher([KEY_A])
    packet = bytearray(cipher.seal(b"payload of a membership message"))
    packet[position] ^= 0x01
    with pytest.raises(ProtocolError):
        cipher.open(bytes(packet))


def test_cipher_rejects_wrong_key() -> None:
    packet = PacketCipher([KEY_A]).seal(b"payload")
    with pytest.raises(ProtocolError, match="unknown key id"):
        PacketCipher([KEY_B]).open(packet)


def test_cipher_rejects_short_packet() -> None:
    with pytest.raises(ProtocolError, match="shorter"):
        PacketCipher([KEY_A]).open(b"\x01abc")


def test_cipher_rejects_other_version() -> None:
    cipher = PacketCipher([KEY_A])
    packet = cipher.seal(b"payload")
    with pytest.raises(ProtocolError, match="version 2"):
        cipher.open(b"\x02" + packet[1:])


def test_cipher_rotation_steps() -> None:
    old, new = PacketCipher([KEY_A]), PacketCipher([KEY_A])
    sealed_old = old.seal(b"before")

    new.install(KEY_B)
    assert new.open(sealed_old) == b"before"
    new.use(KEY_B)
    sealed_new = new.seal(b"after")
    assert sealed_new[1:5] == key_id(KEY_B)
    assert new.open(sealed_old) == b"before"

    new.remove(KEY_A)
    with pytest.raises(ProtocolError):
        new.open(sealed_old)
    assert new.open(sealed_new) == b"after"


def test_cipher_cannot_remove_primary_key() -> None:
    cipher = PacketCipher([KEY_A, KEY_B])
    with pytest.raises(ValueError, match="primary"):
        cipher.remove(KEY_A)
    assert cipher.key_ids == [key_id(KEY_A), key_id(KEY_B)]


def test_cipher_rejects_key_of_wrong_length() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        PacketCipher([b"too short"])


# --- rotation between running nodes ---------------------------------------------------------


async def test_key_rotation_keeps_gossip_nodes_alive() -> None:
    ciphers = [PacketCipher([KEY_A]), PacketCipher([KEY_A])]
    nodes = [
        GossipNode(f"node-{index}", (LOOPBACK, 0), {}, cipher, config=ROTATION_CONFIG)
        for index, cipher in enumerate(ciphers)
    ]
    states_seen: set[MemberState] = set()

    async def record_states(node: GossipNode) -> None:
        async for event in node.events:
            states_seen.add(event.state)

    async def gossip_for(duration_s: float) -> None:
        await trio.sleep(duration_s)
        for node in nodes:
            assert node.stats["bad_packets"] == 0

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for node in nodes:
                nursery.start_soon(record_states, node)
            first_address = await nursery.start(nodes[0].run)
            await nursery.start(nodes[1].run)
            nodes[1].join([first_address])
            while nodes[0].membership.member("node-1") is None:
                await trio.sleep(0.01)
            await gossip_for(0.5)

            # One step at a time on both nodes, with gossip running in between.
            for cipher in ciphers:
                cipher.install(KEY_B)
            await gossip_for(0.5)
            ciphers[0].use(KEY_B)
            await gossip_for(0.5)
            ciphers[1].use(KEY_B)
            await gossip_for(0.5)
            for cipher in ciphers:
                cipher.remove(KEY_A)
            await gossip_for(1.0)

            assert MemberState.DEAD not in states_seen
            assert nodes[0].membership.member("node-1").state == MemberState.ALIVE
            assert nodes[1].membership.member("node-0").state == MemberState.ALIVE
            assert nodes[0].stats["received"] > 0
            nursery.cancel_scope.cancel()
