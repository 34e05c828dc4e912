"""The digest `make lab`'s Meta (lab/meta_uac.py) answers the edge's 407 with, against RFC 7616's
own examples (section 3.9.1), so a wrong hash fails here rather than as a 403 in the lab."""

from __future__ import annotations

import asyncio
import re
import socket

import pytest

from lab.meta_uac import MetaUac, digest_authorization

NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


@pytest.mark.parametrize(("algorithm", "expected"), [
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
])
def test_rfc7616_examples(algorithm: str, expected: str) -> None:
    challenge = (f'Digest realm="http-auth@example.org", qop="auth, auth-int", '
                 f'algorithm={algorithm}, nonce="{NONCE}", opaque="{OPAQUE}"')
    answer = digest_authorization(challenge, "Mufasa", "Circle of Life", "GET",
                                  "/dir/index.html", cnonce=CNONCE)
    assert re.search(r'response="([0-9a-f]+)"', answer)[1] == expected  # type: ignore[index]
    assert f'opaque="{OPAQUE}"' in answer and f"algorithm={algorithm}" in answer
    assert "qop=auth," in answer and "nc=00000001" in answer


def test_meta_tries_the_next_address_of_the_name_when_one_refuses() -> None:
    """A client of a multi-address name: 127.0.0.2 refuses (nothing listens there on the
    port), the connection goes to 127.0.0.1, the refused address is noted."""
    async def scenario() -> tuple[str, list[str]]:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        uac = MetaUac(port, "sip.example.com", "+15550123456", "<sip:x;lr>",
                      hosts=["127.0.0.2", "127.0.0.1"])
        try:
            await uac.open()
            return uac.connected_to, uac.refused
        finally:
            await uac.close()
            server.close()

    assert asyncio.run(scenario()) == ("127.0.0.1", ["127.0.0.2"])


def test_meta_says_so_when_no_address_takes_the_connection() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound, never listening: refused
        uac = MetaUac(port, "sip.example.com", "+15550123456", "<sip:x;lr>",
                      hosts=["127.0.0.1", "127.0.0.2"])
        with pytest.raises(ConnectionRefusedError, match="no address"):
            asyncio.run(uac.open())
    assert uac.refused == ["127.0.0.1", "127.0.0.2"]
