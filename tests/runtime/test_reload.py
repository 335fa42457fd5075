"""Reloading the config in a running app (what SIGHUP does): live keys reach everything built
from them, fixed keys keep their value and are said once, a bad file or template changes nothing."""

from __future__ import annotations

import logging
import shutil
import smtplib
from pathlib import Path

import pytest

from helpdesk.clock import Clock
from helpdesk.config.loader import load_config
from helpdesk.config.settings import Config
from helpdesk.intake.smtp import SmtpIntake
from helpdesk.runtime import app as app_module
from helpdesk.runtime import reload
from tests.conftest import START, authenticated, free_port, mail, write_config
from tests.flows.test_smtp import crlf

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
DAVE = '\n[[staff]]\naddress = "dave@shop.example"\nname = "Dave"\nrole = "agent"\n'


def edit(path: Path, *pairs: tuple[str, str], append: str = "") -> None:
    text = path.read_text()
    for old, new in pairs:
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text + append)


@pytest.fixture
def running(tmp_path):
    """An app built as ``helpdesk run`` builds it, on a copy of the templates it may change."""
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    config = write_config(tmp_path)
    app = app_module.build(config, Clock(START), templates=templates)
    yield app
    app.close()


def ingest(app, raw: bytes):
    app.store([app_module.spool.Incoming(raw, "support", "file")])
    app.process()
    app.deliver()


def sent(tmp_path) -> list[str]:
    new = tmp_path / "mailboxes" / "outgoing" / "new"
    return [p.read_text() for p in sorted(new.iterdir())] if new.exists() else []


def test_fixed_keys_keep_their_value_and_are_said_once_each(tmp_path):
    path = write_config(tmp_path, smtp_port=2600)
    old = load_config(path)
    edit(path, ('url = "sqlite:///var/helpdesk.db"', 'url = "sqlite:///var/other.db"'),
         ("127.0.0.1:2600", "127.0.0.1:2601"),
         ('secret_key_file = "var/secret.key"', 'secret_key_file = "var/other.key"'),
         ('transport = "maildir:mailboxes/outgoing"', 'transport = "smtp+plain://127.0.0.1:25"'),
         ('source = "maildir:mailboxes/disputes"', 'source = "none"'),
         ('first_response = "4h"', 'first_response = "2h"'),
         append=DAVE + '\n[intake]\nparse_workers = 5\n')
    config, kept = reload.merged(old, load_config(path))
    assert [line.split(" changed, ")[0] for line in kept] == [
        "[helpdesk] secret_key_file", "[database] url", "[smtp_server] listen", "[outgoing] transport",
        "[intake] parse_workers", "[[mailboxes]] (disputes) source"]
    assert all(line.endswith("cannot change while the service runs: the old value stays until a restart")
               for line in kept)
    for section in ("database", "smtp_server", "outgoing", "mailboxes"):
        assert getattr(config, section) == getattr(old, section), section
    assert config.helpdesk.secret_key_file == old.helpdesk.secret_key_file
    assert config.intake.parse_workers == old.intake.parse_workers
    assert config.tickets.first_response.total_seconds() == 2 * 3600       # live keys: the new values
    assert [s.address for s in config.staff][-1] == "dave@shop.example"


def test_a_mailbox_added_is_one_line(tmp_path):
    path = write_config(tmp_path)
    old = load_config(path)
    edit(path, append='\n[[mailboxes]]\nname = "sales"\naddress = "sales@shop.example"\n')
    config, kept = reload.merged(old, load_config(path))
    assert kept == [("[[mailboxes]] (support, disputes -> support, disputes, sales) changed, but it cannot "
                     "change while the service runs: the old value stays until a restart")]
    assert config.mailboxes == old.mailboxes


def test_live_keys_reach_the_mail_at_once(tmp_path, running):
    edit(running.config.path, ('first_response = "4h"', 'first_response = "2h"'),
         ('name = "Difmark Support"', 'name = "Acme Help"'), append=DAVE)
    assert reload.reload(running)
    ingest(running, mail())
    mails = sent(tmp_path)
    [ack] = [m for m in mails if "To: Bob Buyer" in m]
    assert "We will answer you within 2 hours." in ack and "thank you for writing to Acme Help" in ack
    assert "From: Acme Help <support@shop.example>" in ack
    assert sorted(m.split("To: ")[1].split("\n")[0] for m in mails if "Bob Buyer" not in m.split("To: ")[1][:20]) \
        == ["Alice <alice@shop.example>", "Dave <dave@shop.example>"]


def test_a_new_staff_member_may_answer_by_mail_at_once(tmp_path, running):
    ingest(running, mail(message_id="q"))
    edit(running.config.path, append=DAVE)
    assert reload.reload(running)
    [notice] = [m for m in sent(tmp_path) if "To: Alice" in m]
    reply_to = notice.split("Reply-To: ")[1].split("\n")[0].strip("<>").split("<")[-1].rstrip(">")
    answer = authenticated(mail(   # Alice's signed address proves nothing of Dave: our MTA's word does
        frm="Dave <dave@shop.example>", to=reply_to, subject="Re: [T-1] Key does not work",
        body="#assign dave\nTry this key instead.\n", headers={"In-Reply-To": "<q@example.com>"}))
    before = len(sent(tmp_path))
    ingest(running, answer)
    relayed = [m for m in sent(tmp_path)[before:] if "To: Bob Buyer" in m]
    assert len(relayed) == 1 and "Try this key instead." in relayed[0]     # a staff reply, not a customer's


def test_limits_and_dispute_rules_are_rebuilt(running):
    edit(running.config.path, ('[limits]\n', '[limits]\nmax_message_size = "1MB"\nmax_attachment_size = "64KB"\n'),
         append='\n[disputes]\nseller_response = "24h"\n')
    assert reload.reload(running)
    assert running.pipeline.parser.max_size == 1024 * 1024
    assert running.desk.attachments.max_size == 64 * 1024
    assert running.disputes.rules.settings.seller_response.total_seconds() == 24 * 3600


def test_nothing_in_the_app_keeps_the_old_config(running):
    old = running.config
    edit(running.config.path, ('first_response = "4h"', 'first_response = "2h"'))
    assert reload.reload(running)
    assert list(_holding(running, old)) == []
    assert running.config is not old


def _holding(root, target, path="app", seen=None, depth=0):
    """Where ``target`` is still referenced from ``root``: attributes, containers, closures."""
    seen = set() if seen is None else seen
    if id(root) in seen or depth > 8 or isinstance(root, (str, bytes, int, float, Path)):
        return
    seen.add(id(root))
    if isinstance(root, Config):
        return
    if isinstance(root, dict):
        children = [(f"{path}[{k!r}]", v) for k, v in root.items()]
    elif isinstance(root, (list, tuple, set, frozenset)):
        children = [(f"{path}[{n}]", v) for n, v in enumerate(root)]
    elif callable(root) and getattr(root, "__closure__", None):
        children = [(f"{path}.<closure>", c.cell_contents) for c in root.__closure__]
    elif type(root).__module__.startswith("helpdesk") and hasattr(root, "__dict__"):
        children = [(f"{path}.{k}", v) for k, v in vars(root).items()]
    else:
        return
    for where, child in children:
        if child is target:
            yield where
        else:
            yield from _holding(child, target, where, seen, depth + 1)


def test_templates_are_read_again_and_a_broken_one_changes_nothing(tmp_path, running, caplog):
    ack = tmp_path / "templates" / "customer" / "ack.txt.j2"
    ack.write_text(ack.read_text().replace("thank you for writing to", "many thanks for writing to"))
    assert reload.reload(running)
    ingest(running, mail(message_id="one"))
    assert any("many thanks for writing to Difmark Support" in m for m in sent(tmp_path))

    ack.write_text(ack.read_text() + "{% if %}\n")
    caplog.set_level(logging.INFO, logger="helpdesk.reload")
    assert not reload.reload(running)
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert line.startswith("template ") and "ack.txt.j2" in line and "TemplateSyntaxError" in line
    assert line.endswith("; keeping the running configuration") and "\n" not in line
    before = len(sent(tmp_path))
    ingest(running, mail(message_id="two", frm="Eve <eve@example.com>"))
    assert any("many thanks for writing to" in m for m in sent(tmp_path)[before:])   # the running ones


def test_a_config_that_does_not_load_changes_nothing(running, caplog):
    old = running.config
    edit(running.config.path, ('first_response = "4h"', 'first_response = "soon"'))
    caplog.set_level(logging.INFO, logger="helpdesk.reload")
    assert not reload.reload(running)
    assert running.config is old
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"{old.path}: [tickets] first_response: ")
    assert line.endswith("; keeping the running configuration")


def test_the_smtp_server_takes_the_new_size_limit(tmp_path):
    config = write_config(tmp_path, smtp_port=free_port())
    stored = []
    server = SmtpIntake(load_config(config), lambda batch: stored.extend(batch) or
                        [app_module.spool.Stored(len(stored), "k")])
    server.start()
    try:
        big = crlf(mail(body=("y" * 70 + "\n") * 400))   # about 28 KB
        port = load_config(config).smtp_server.port
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
            assert client.sendmail("bob@example.com", ["support@shop.example"], big) == {}
        edit(config, ('[limits]\n', '[limits]\nmax_message_size = "16KB"\n'))
        server.reconfigure(load_config(config))
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
            client.ehlo()
            assert client.esmtp_features["size"] == str(16 * 1024)          # advertised to new sessions
            with pytest.raises((smtplib.SMTPSenderRefused, smtplib.SMTPDataError)) as refused:
                client.sendmail("bob@example.com", ["support@shop.example"], big)
        assert refused.value.smtp_code == 552
        assert len(stored) == 1
    finally:
        server.stop()
