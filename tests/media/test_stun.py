"""The ICE-lite responder: RFC 5769 test vectors, and answers checked by an independent
HMAC-SHA1/CRC-32 computation (not by the STUN library that made them)."""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib

from aioice import stun

from lab.media.stun import IceLiteResponder, binding_request

# RFC 5769 2.1: sample request (ICE-CONTROLLED, USERNAME "evtj:h6vY")
RFC5769_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae"
    "802200105354554e207465737420636c69656e74"
    "002400046e0001ff80290008932ff9b151263b36"
    "000600096576746a3a68367659202020"
    "000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
    "80280004e57a3bcf")
RFC5769_PASSWORD = "VOkJxbRl1RmTxUk/WvJxBt"
# RFC 5769 2.2: sample IPv4 response, XOR-MAPPED-ADDRESS 192.0.2.1:32853
RFC5769_RESPONSE = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000080001a147e112a643"
    "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004c07d4c96")

LOCAL_UFRAG, LOCAL_PWD, REMOTE_UFRAG = "wAbC", "wAbCdEfGhIjKlMnOpQrStUvW", "fsUf"
SOURCE = ("127.0.0.1", 40000)


def independent_integrity_ok(message: bytes, password: str) -> bool:
    """RFC 8489 14.5 by hand: HMAC-SHA1 over the message up to MESSAGE-INTEGRITY, with the
    header length covering it; and 14.7: CRC-32 XOR 0x5354554e over everything before it."""
    position = 20
    while position < len(message):
        kind, length = struct.unpack_from("!HH", message, position)
        if kind == 0x0008:
            covered = bytearray(message[:position])
            struct.pack_into("!H", covered, 2, position + 24 - 20)
            expected = hmac.new(password.encode(), bytes(covered), hashlib.sha1).digest()
            if message[position + 4:position + 24] != expected:
                return False
        if kind == 0x8028:
            crc = (zlib.crc32(message[:position]) ^ 0x5354554E) & 0xFFFFFFFF
            return bool(struct.unpack_from("!I", message, position + 4)[0] == crc)
        position += 4 + length + (-length % 4)
    return False


def test_rfc5769_request_vector_checks_out() -> None:
    message = stun.parse_message(RFC5769_REQUEST)  # raises if its FINGERPRINT is wrong
    assert message.attributes["USERNAME"] == "evtj:h6vY"
    assert message.check_message_integrity(RFC5769_PASSWORD.encode())
    assert not message.check_message_integrity(b"not the password")
    assert independent_integrity_ok(RFC5769_REQUEST, RFC5769_PASSWORD)


def test_rfc5769_response_vector_address() -> None:
    message = stun.parse_message(RFC5769_RESPONSE)
    assert message.attributes["XOR-MAPPED-ADDRESS"] == ("192.0.2.1", 32853)
    assert message.check_message_integrity(RFC5769_PASSWORD.encode())
    assert independent_integrity_ok(RFC5769_RESPONSE, RFC5769_PASSWORD)


def test_rfc5769_request_gets_role_conflict_from_a_lite_agent() -> None:
    """The vector's sender claims ICE-CONTROLLED; a lite agent is CONTROLLED too: 487."""
    responder = IceLiteResponder("evtj", RFC5769_PASSWORD)
    reply = responder.handle(RFC5769_REQUEST, SOURCE)
    assert reply is not None
    answer = stun.parse_message(reply)
    assert answer.message_class == stun.Class.ERROR
    assert answer.attributes["ERROR-CODE"][0] == 487
    assert independent_integrity_ok(reply, RFC5769_PASSWORD)
    assert responder.counters.role_conflicts == 1 and responder.nominated is None


def check(controlling: bool = True, nominate: bool = True, password: str = LOCAL_PWD,
          username: str = f"{LOCAL_UFRAG}:{REMOTE_UFRAG}") -> bytes:
    return bytes(binding_request(username, password, controlling=controlling, nominate=nominate))


def test_controlling_check_gets_success_with_integrity_and_fingerprint() -> None:
    responder = IceLiteResponder(LOCAL_UFRAG, LOCAL_PWD, REMOTE_UFRAG)
    request = check(nominate=False)
    reply = responder.handle(request, SOURCE)
    assert reply is not None
    answer = stun.parse_message(reply)
    assert answer.message_class == stun.Class.RESPONSE
    assert answer.transaction_id == stun.parse_message(request).transaction_id
    assert answer.attributes["XOR-MAPPED-ADDRESS"] == SOURCE
    assert independent_integrity_ok(reply, LOCAL_PWD)
    assert not independent_integrity_ok(reply, "another password")
    assert responder.nominated is None  # not nominated yet


def test_use_candidate_nominates_the_pair() -> None:
    responder = IceLiteResponder(LOCAL_UFRAG, LOCAL_PWD, REMOTE_UFRAG)
    responder.handle(check(nominate=True), SOURCE)
    assert responder.nominated == SOURCE


def test_wrong_password_gets_401_and_no_nomination() -> None:
    responder = IceLiteResponder(LOCAL_UFRAG, LOCAL_PWD, REMOTE_UFRAG)
    reply = responder.handle(check(password="wrong-password-0123456789"), SOURCE)
    assert reply is not None
    assert stun.parse_message(reply).attributes["ERROR-CODE"][0] == 401
    assert responder.counters.bad_integrity == 1 and responder.nominated is None


def test_wrong_username_gets_401() -> None:
    responder = IceLiteResponder(LOCAL_UFRAG, LOCAL_PWD, REMOTE_UFRAG)
    reply = responder.handle(check(username=f"other:{REMOTE_UFRAG}"), SOURCE)
    assert reply is not None and stun.parse_message(reply).attributes["ERROR-CODE"][0] == 401
    assert responder.counters.wrong_username == 1 and responder.nominated is None


def test_controlled_check_gets_487() -> None:
    responder = IceLiteResponder(LOCAL_UFRAG, LOCAL_PWD, REMOTE_UFRAG)
    reply = responder.handle(check(controlling=False, nominate=False), SOURCE)
    assert reply is not None and stun.parse_message(reply).attributes["ERROR-CODE"][0] == 487


def test_corrupted_fingerprint_is_dropped() -> None:
    responder = IceLiteResponder(LOCAL_UFRAG, LOCAL_PWD, REMOTE_UFRAG)
    request = bytearray(check())
    request[-1] ^= 0xFF
    assert responder.handle(bytes(request), SOURCE) is None
    assert responder.counters.malformed == 1
