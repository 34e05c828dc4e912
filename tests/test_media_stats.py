"""kemi/media_stats.py: what rtpengine received from each side, read from its query answer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kemi.media_stats import MAX_QUERY_TEXT, MediaSeen, media_seen


def stream(flags: list[str], packets: int) -> dict[str, Any]:
    return {"local port": 30000, "flags": flags, "stats": {"packets": packets, "bytes": 0}}


def query(meta: list[dict[str, Any]], business: list[dict[str, Any]]) -> str:
    """rtpengine 10.5's query answer, shaped as Kamailio's rtpengine_query_v("j") gives it."""
    return json.dumps({"created": 1, "tags": {
        "meta-tag": {"tag": "meta-tag", "medias": [{"index": 1, "streams": meta}]},
        "fs-tag": {"tag": "fs-tag", "medias": [{"index": 1, "streams": business}]}},
        "totals": {"RTP": {"packets": 999}}, "result": "ok"})


def test_packets_per_side_count_rtp_streams_not_the_rtcp_port() -> None:
    text = query([stream(["RTP", "RTCP", "filled"], 150)],  # rtcp-mux: one port for both
                 [stream(["RTP", "filled"], 140), stream(["RTCP", "filled"], 7)])
    assert media_seen(text, "meta-tag") == MediaSeen(from_meta=150, from_business=140)
    assert media_seen(text, "fs-tag") == MediaSeen(from_meta=140, from_business=150)


@pytest.mark.parametrize(("meta", "business", "diagnosis"), [
    (150, 150, None), (150, 0, "no_business_media"), (0, 150, "no_meta_media"), (0, 0, "no_media"),
])
def test_a_silent_side_is_named(meta: int, business: int, diagnosis: str | None) -> None:
    seen = media_seen(query([stream(["RTP"], meta)], [stream(["RTP"], business)]), "meta-tag")
    assert seen is not None and seen.diagnosis() == diagnosis
    assert seen.line() == f"media from_meta={meta} from_business={business} packets"


@pytest.mark.parametrize("text", [
    "", "not json", "[]", '{"tags": []}', "x" * (MAX_QUERY_TEXT + 1),
])
def test_an_unreadable_answer_is_none(text: str) -> None:
    assert media_seen(text, "meta-tag") is None


def test_odd_shapes_count_as_zero() -> None:
    text = json.dumps({"tags": {"meta-tag": {"medias": "x"}, "fs-tag": {"medias": [
        {"streams": [{"flags": ["RTP"], "stats": {"packets": "12"}}, "junk",
                     {"flags": ["RTP"], "stats": {"packets": -5}}]}]}}})
    assert media_seen(text, "meta-tag") == MediaSeen(0, 0)
