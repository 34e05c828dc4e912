"""kemi/media_loss.py: the record an answered call leaves, and the BYE toward Meta built from it
when its business node is lost (the cluster lab's media drill sends it through Kamailio)."""

from __future__ import annotations

import json
from typing import Any

from kemi.media_loss import (
    REASON,
    answered_call,
    bye_toward_meta,
    decode,
    lost_with_node,
    node_key,
    record_key,
)
from kemi.settings import settings_from_dict
from lab.edge import EXAMPLE_CONFIG
from provisioning.render import edge_settings
from siteconfig.model import load_config

META_FROM = '"15550123456" <sip:meta@wa.meta.vc>;tag=meta1'
BUSINESS_TO = "<sip:15550100003@sip.example.com>;tag=biz9"


def _record(**changes: str) -> dict[str, Any]:
    fields = {"call_id": "abc@wa.meta.vc", "meta_contact": "sip:meta@203.0.113.5:40123;transport=tls;ob",
              "meta_routes": "", "reply_from": META_FROM, "reply_to": BUSINESS_TO,
              "invite_cseq": "2 INVITE", "meta_source": "sip:203.0.113.5:40123;transport=tcp",
              "socket": "tcp:127.0.0.1:5062"}
    fields.update(changes)
    return fields


def test_the_bye_is_the_callee_sides_request_of_the_call_with_the_reason() -> None:
    record = answered_call(**_record())
    assert record is not None
    bye = bye_toward_meta(decode(record.encode()) or record)
    assert bye.ruri == "sip:meta@203.0.113.5:40123;transport=tls;ob"  # Meta's Contact
    assert bye.next_hop == "sip:203.0.113.5:40123;transport=tcp"  # Meta's own connection
    assert bye.socket == "tcp:127.0.0.1:5062"
    lines = bye.headers.split("\r\n")
    assert lines[-1] == "" and all(line for line in lines[:-1])
    assert f"From: {BUSINESS_TO}" in lines  # tags swapped: the business's side speaks
    assert f"To: {META_FROM}" in lines
    assert "Call-ID: abc@wa.meta.vc" in lines
    assert "CSeq: 3 BYE" in lines
    assert f"Reason: {REASON}" in lines and "cause=502" in REASON
    assert not any(line.startswith("Route:") for line in lines)  # Meta recorded no route


def test_metas_record_route_is_the_bye_route_set_in_the_order_received() -> None:
    routes = "<sip:p1.wa.meta.vc;lr>, <sip:p2.wa.meta.vc;lr>"
    record = answered_call(**_record(meta_routes=routes))
    assert record is not None
    assert f"Route: {routes}\r\n" in bye_toward_meta(record).headers


def test_no_record_without_what_a_bye_needs() -> None:
    assert answered_call(**_record(meta_contact="")) is None
    assert answered_call(**_record(reply_to="<sip:15550100003@sip.example.com>")) is None  # no tag
    assert answered_call(**_record(invite_cseq="x INVITE")) is None
    assert answered_call(**_record(meta_routes="<sip:x;lr>" * 1000)) is None
    assert decode("not json") is None and decode("[1]") is None
    assert decode('{"call_id": "x"}') is None  # fields missing


def test_a_nodes_key_is_the_same_from_the_dispatcher_uri_and_from_a_reply_source() -> None:
    assert node_key("sip:198.18.20.21:5080") == node_key("198.18.20.21:5080") == "198.18.20.21:5080"
    assert node_key("sip:198.18.20.21") == "198.18.20.21:5060"
    assert record_key("sip:198.18.20.21:5080;transport=udp", "c1") == "198.18.20.21:5080|c1"
    assert not record_key("198.18.20.22:5080", "c1").startswith(node_key("sip:198.18.20.21:5080"))


def test_a_call_the_node_answered_after_the_failed_probe_was_sent_is_not_ended() -> None:
    record = answered_call(**_record(), answered_at=1000.0)
    assert record is not None and decode(record.encode()) == record
    # the probe that failed now was sent probe_timeout_s ago
    assert lost_with_node(record, now=1006.0, probe_timeout_s=5.0)  # answered before it left
    assert not lost_with_node(record, now=1004.0, probe_timeout_s=5.0)  # a stale probe's failure


def test_the_edge_knows_how_long_a_probe_takes_to_fail() -> None:
    config = load_config(EXAMPLE_CONFIG)
    settings = settings_from_dict(json.loads(json.dumps(edge_settings(config))))
    assert settings.probe_timeout_s == config.freeswitch.invite_timeout  # tm's fr_timer
