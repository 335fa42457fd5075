"""Signed reply addresses, pure: the token names thread and participant, the MAC binds both."""

from __future__ import annotations

from helpdesk.mail import replyaddr
from helpdesk.mail.replyaddr import ReplyToken

SECRET = b"0123456789abcdef0123456789abcdef"
OURS = frozenset({"support@shop.example", "disputes@shop.example"})


def test_an_address_we_issued_verifies_to_its_token_whatever_the_case():
    address = replyaddr.reply_address(SECRET, "support@shop.example", ReplyToken("t", 42, 7))
    assert address.startswith("support+t42.7.") and address.endswith("@shop.example")
    assert replyaddr.verify(SECRET, OURS, address) == ReplyToken("t", 42, 7)
    assert replyaddr.verify(SECRET, OURS, address.upper()) == ReplyToken("t", 42, 7)


def test_another_thread_participant_secret_or_mailbox_does_not_verify():
    address = replyaddr.reply_address(SECRET, "support@shop.example", ReplyToken("t", 42, 7))
    mac = address.partition("@")[0].rsplit(".", 1)[1]
    assert replyaddr.verify(SECRET, OURS, address.replace("t42.7.", "t43.7.")) is None
    assert replyaddr.verify(SECRET, OURS, address.replace("t42.7.", "t42.8.")) is None
    assert replyaddr.verify(b"another secret of sixteen+ bytes", OURS, address) is None
    assert replyaddr.verify(SECRET, OURS, address.replace("@shop.example", "@evil.example")) is None
    assert replyaddr.verify(SECRET, OURS, address.replace(mac, "a" * len(mac))) is None


def test_find_token_skips_untagged_and_foreign_addresses():
    mine = replyaddr.reply_address(SECRET, "disputes@shop.example", ReplyToken("d", 3, 12))
    found = replyaddr.find_token(SECRET, OURS, ("support@shop.example", "x+y@other.example", mine))
    assert found == ReplyToken("d", 3, 12)
    assert replyaddr.find_token(SECRET, OURS, ("support@shop.example",)) is None


def test_untagged_is_the_mailbox_an_address_belongs_to():
    assert replyaddr.untagged("support+t1.2.abcdefghij@shop.example") == "support@shop.example"
    assert replyaddr.untagged("bob@example.com") == "bob@example.com"
