"""The dispute commands: ``disputes``, ``disputes open``, ``show D-n``, ``run --once --now``;
and the mail layer's part: files passed on, every template rendering."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
from pathlib import Path

import pytest

from helpdesk.cli import main
from helpdesk.clock import to_utc
from helpdesk.mail.compose import ATTACHMENTS, compose
from helpdesk.store.schema import Dispute, Outbox, Ticket
from tests.conftest import mail, write_config

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PNG = b"\x89PNG\r\n\x1a\nimage"


@pytest.fixture
def config(tmp_path, db_url):
    path = str(write_config(tmp_path, db_url=db_url))
    assert main(["--config", path, "orders", "import", str(FIXTURES / "orders.csv")]) == 1  # 3 bad rows
    return path


def cli(config, *args, capsys):
    code = main(["--config", config, *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def outgoing(tmp_path) -> list[email.message.EmailMessage]:
    folder = tmp_path / "mailboxes" / "outgoing" / "new"
    paths = sorted(folder.iterdir(), key=lambda p: (p.stat().st_mtime_ns, p.name))
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in paths]


def open_by_cli(tmp_path, config, capsys, order="100234", reason="key does not work", attach=True):
    description = tmp_path / "description.txt"
    description.write_text("Steam says the key is invalid.\n")
    image = tmp_path / "error.png"
    image.write_bytes(PNG)
    extra = ["--attach", str(image)] if attach else []
    return cli(config, "disputes", "open", "--order", order, "--reason", reason,
               "--description-file", str(description), *extra, capsys=capsys)


def test_disputes_open_from_the_command_line(tmp_path, config, capsys):
    code, out, _ = open_by_cli(tmp_path, config, capsys)
    assert (code, out.strip()) == (0, "D-1: opened for order 100234; the buyer and the seller were told")
    buyer, seller = outgoing(tmp_path)
    assert "bob@example.com" in str(buyer["To"]) and "sam@seller.example" in str(seller["To"])
    [image] = list(seller.iter_attachments())
    assert (image.get_filename(), image.get_content()) == ("error.png", PNG)
    assert "Steam says the key is invalid." in seller.get_body(("plain",)).get_content()


@pytest.mark.parametrize("order, reason, message", [
    ("999999", "not received", "helpdesk: no order 999999 (import orders with 'helpdesk orders import FILE')"),
    ("100234", "lost", ("helpdesk: reason 'lost' is not one of: not received, key does not work, "
                        "not as described, other")),
])
def test_disputes_open_refusals_are_one_line(tmp_path, config, capsys, order, reason, message):
    code, out, err = open_by_cli(tmp_path, config, capsys, order=order, reason=reason, attach=False)
    assert (code, out, err.strip()) == (1, "", message)
    assert Dispute.select().count() == 0


def test_a_second_open_dispute_for_one_order_is_refused(tmp_path, config, capsys):
    open_by_cli(tmp_path, config, capsys)
    code, _, err = open_by_cli(tmp_path, config, capsys, reason="other")
    assert (code, err.strip()) == (1, "helpdesk: order 100234 already has an open dispute: D-1 (awaiting_seller)")


def test_listing_show_and_tickets(tmp_path, config, capsys):
    raw = tmp_path / "open.eml"
    raw.write_bytes(mail(to="disputes@shop.example", subject="Order 100235",
                         body="Reason: not received\n\nNothing arrived.\n"))
    code, out, _ = cli(config, "ingest", str(raw), capsys=capsys)
    assert "1 dispute mails (1 opened, 0 refused)" in out
    code, out, _ = cli(config, "disputes", "--json", capsys=capsys)
    [row] = json.loads(out)
    assert {"id", "status", "order", "buyer", "seller", "reason", "created_at", "deadline"} <= set(row)
    assert (row["id"], row["status"], row["order"], row["buyer"], row["seller"]) == (
        "D-1", "awaiting_seller", "100235", "bob@example.com", "sam@seller.example")
    assert row["deadline"]["kind"] == "seller_due"
    code, out, _ = cli(config, "disputes", capsys=capsys)
    assert out.startswith("    D-1  awaiting_seller  order 100235") and "next: seller_due" in out
    code, out, _ = cli(config, "disputes", "--status", "resolved", capsys=capsys)
    assert out.strip() == "no disputes with status resolved"
    code, out, _ = cli(config, "show", "D-1", capsys=capsys)
    assert out.startswith("D-1  [awaiting_seller]  order 100235: Office Suite licence")
    assert "None -> awaiting_seller" not in out and "- -> awaiting_seller" in out
    assert "Nothing arrived." in out and ">>> dispute_opened to sam@seller.example" in out
    detail = json.loads(cli(config, "show", "d-1", "--json", capsys=capsys)[1])
    assert detail["history"][0]["to"] == "awaiting_seller" and detail["timers"][0]["kind"] == "seller_reminder"
    assert cli(config, "tickets", "--json", capsys=capsys)[1].strip() == "[]"
    chat = Ticket.get().id
    code, _, err = cli(config, "show", f"T-{chat}", capsys=capsys)
    assert (code, err.strip()) == (1, f"helpdesk: no ticket T-{chat} (it is the chat of D-1: helpdesk show D-1)")
    code, _, err = cli(config, "show", "D-99", capsys=capsys)
    assert (code, err.strip()) == (1, "helpdesk: no dispute D-99")


def test_run_once_now_applies_the_deadlines_once(tmp_path, config, capsys):
    open_by_cli(tmp_path, config, capsys)
    opened = to_utc(Dispute.get().created_at)
    later = (opened + dt.timedelta(hours=49)).isoformat()
    assert cli(config, "run", "--once", "--now", later, capsys=capsys)[0] == 0
    assert Dispute.get().status == "seller_missed"
    kinds = [o.kind for o in Outbox.select().order_by(Outbox.id)]
    assert kinds.count("dispute_update") == 2 and kinds.count("dispute_seller_missed") == 1
    assert "dispute_reminder" not in kinds          # their moment passed with the deadline
    assert cli(config, "run", "--once", "--now", later, capsys=capsys)[0] == 0
    assert [o.kind for o in Outbox.select().order_by(Outbox.id)] == kinds


# --- the mail layer -------------------------------------------------------------


def test_files_passed_on_are_attached_and_a_missing_one_fails_visibly(tmp_path):
    stored = tmp_path / "ab" / "abcdef"
    stored.parent.mkdir()
    stored.write_bytes(PNG)
    headers = {"From": ["Desk", "d@shop.example"], "To": ["", "b@example.com"],
               ATTACHMENTS: [["Bild ä.png", "image/png", str(stored)], ["x.bin", "bad type", str(stored)]]}
    raw = compose(message_id="m@x", subject="s", text="hello", html=None, headers_json=json.dumps(headers),
                  date=dt.datetime(2026, 11, 26, tzinfo=dt.UTC))
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert ATTACHMENTS not in raw.decode()
    assert parsed.get_body(("plain",)).get_content().strip() == "hello"
    first, second = parsed.iter_attachments()
    assert (first.get_filename(), first.get_content_type(), first.get_content()) == ("Bild ä.png", "image/png", PNG)
    assert second.get_content_type() == "application/octet-stream"
    stored.unlink()
    with pytest.raises(FileNotFoundError):
        compose(message_id="m@x", subject="s", text="hello", html=None, headers_json=json.dumps(headers),
                date=dt.datetime(2026, 11, 26, tzinfo=dt.UTC))


def test_every_dispute_template_renders_for_every_event():
    """StrictUndefined: each template renders with what ``disputes`` passes, in every state."""
    from helpdesk.outbound.notify import Renderer
    from helpdesk.runtime.app import TEMPLATES
    renderer = Renderer(TEMPLATES)
    files = [{"filename": "a.png", "size": 3, "content_type": "image/png", "refused": None, "withheld": ""},
             {"filename": "b.vcf", "size": 9, "content_type": "text/vcard", "refused": None,
              "withheld": "it carries its sender's address"},
             {"filename": "c.iso", "size": 9, "content_type": "x/y", "refused": "too large", "withheld": ""}]
    dispute = {"id": "D-1", "number": 1, "order": "100234", "product": "Key", "amount": "19.99",
               "currency": "EUR", "reason": "other", "description": "broken", "status": "negotiation",
               "status_text": "negotiating", "created": "Thu", "seller_due": "Sat", "window_closes": "Sun",
               "admin_due": "Sun", "decided_for": "buyer", "decision": "refund", "seller_late": False}
    base = {"helpdesk_name": "Difmark Support", "recipient": "x@example.com", "recipient_name": "X",
            "dispute": dispute, "deadline": {"kind": "window_close", "what": "it closes", "at": "Sun"},
            "commands": [{"command": "help", "usage": "#help", "does": "this list"}],
            "address": "disputes@shop.example", "durations": {"seller_response": "2 days",
                                                               "negotiation": "3 days", "admin_after": "3 days"},
            "by": "seller", "who": "the seller", "offer": {"number": 1, "author": "seller", "text": "half"},
            "accepted": {"number": 1, "author": "seller", "text": "half"}, "text": "hi",
            "attachments": files, "passed_on": True, "empty": True, "left": "1 day", "command": "#x", "why": "no",
            "when": "later", "chat": [{"at": "Thu", "role": "buyer", "text": "t", "attachments": files}],
            "proposals": [{"number": 1, "author": "seller", "text": "half", "accepted": False}]}
    events = [None, "seller_answered", "proposed", "accepted", "return_accepted", "escalated", "withdrawn",
              "decided", "seller_missed", "window_closed", "admin_review"]
    per_audience = {"buyer": ["dispute_opened", "dispute_message", "dispute_update", "dispute_help",
                              "dispute_command_refused"],
                    "seller": ["dispute_opened", "dispute_reminder", "dispute_message", "dispute_update",
                               "dispute_help", "dispute_command_refused"],
                    "admin": ["dispute_seller_missed", "dispute_review", "dispute_message", "dispute_update",
                              "dispute_help", "dispute_command_refused"]}
    for audience, names in per_audience.items():
        for name in names:
            for event in events:
                for by in ("buyer", "seller", "admin", "system"):
                    rendered = renderer.render(audience, name, {**base, "role": audience, "event": event,
                                                                "by": by})
                    assert "D-1" in rendered.subject and rendered.text.strip()
    stranger = {"helpdesk_name": "H", "recipient": "x@example.com", "recipient_name": "", "address": "d@x",
                "fields": ["the order id"], "reasons": ["other"], "reason_given": "lost", "order": "1",
                "problems": ["no_order", "no_reason", "bad_reason", "no_description"],
                "existing": {"id": "D-1", "status": "negotiation", "status_text": "negotiating"},
                "dispute_id": "D-1", "disputes": [{**dispute, "role": "buyer", "deadline": None}]}
    for problem in ("unknown_order", "already_open", "bad_request"):
        assert renderer.render("buyer", "dispute_refused", {**stranger, "problem": problem}).text
    assert "D-1" in renderer.render("buyer", "dispute_not_yours", stranger).text
    assert "D-1" in renderer.render("buyer", "dispute_status", stranger).text
    assert "no disputes" in renderer.render("buyer", "dispute_status", {**stranger, "disputes": []}).text


def test_listing_an_unknown_status_names_the_valid_ones(config, capsys):
    with pytest.raises(SystemExit) as stopped:          # a wrong value is wrong usage: exit 2
        cli(config, "disputes", "--status", "bogus", capsys=capsys)
    out, err = capsys.readouterr()
    assert (stopped.value.code, out) == (2, "")
    line = err.splitlines()[-1]
    assert line.startswith("helpdesk disputes: error: argument --status: invalid choice: 'bogus' (choose from ")
    assert all(status in line for status in ("awaiting_seller", "seller_missed", "negotiation", "window_closed",
                                             "admin_review", "return_accepted", "resolved", "decided",
                                             "withdrawn"))


def test_an_opening_that_lost_the_race_is_the_already_open_line(tmp_path, config, capsys, monkeypatch):
    """Two openings at once: the database's unique index refuses the second one."""
    from helpdesk.disputes.desk import DisputeDesk
    open_by_cli(tmp_path, config, capsys)
    real, calls = DisputeDesk.problem, []

    def blind(self, *args):
        calls.append(args)
        return None if len(calls) == 1 else real(self, *args)   # the first check ran before D-1 committed
    monkeypatch.setattr(DisputeDesk, "problem", blind)
    code, out, err = open_by_cli(tmp_path, config, capsys, reason="other")
    assert (code, out, err.strip()) == (
        1, "", "helpdesk: order 100234 already has an open dispute: D-1 (awaiting_seller)")
    assert Dispute.select().count() == 1 and Ticket.select().count() == 1
