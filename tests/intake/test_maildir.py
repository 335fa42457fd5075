"""Maildir intake: stored first, acknowledged (moved to cur/) after, never doubled."""

from __future__ import annotations

import os

import pytest

from helpdesk.intake import maildir
from helpdesk.runtime.service import poll_maildirs
from helpdesk.store.schema import RawMessage, Ticket
from tests.conftest import mail

pytestmark = pytest.mark.usefixtures("db_url")


def drop(desk, name: str, raw: bytes) -> None:
    folder = desk.folder / "mailboxes" / "support" / "new"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(raw)


def test_files_in_new_are_stored_then_moved_to_cur_as_seen(desk):
    drop(desk, "1700000001.A.host", mail(message_id="a"))
    drop(desk, "1700000002.B.host", mail(message_id="b", body="other\n"))
    assert poll_maildirs(desk.app) == 2
    assert os.listdir(desk.folder / "mailboxes" / "support" / "new") == []
    assert sorted(os.listdir(desk.folder / "mailboxes" / "support" / "cur")) == [
        "1700000001.A.host:2,S", "1700000002.B.host:2,S"]
    assert RawMessage.select().where(RawMessage.source == "maildir").count() == 2


def test_crash_between_store_and_move_does_not_double_the_ticket(desk, monkeypatch):
    """The worst moment for a Maildir: committed, but the file is still in new/."""
    drop(desk, "1700000001.A.host", mail(message_id="a"))

    def crash(path):
        raise KeyboardInterrupt("killed before the move")

    monkeypatch.setattr(maildir, "acknowledge", crash)
    with pytest.raises(KeyboardInterrupt):
        poll_maildirs(desk.app)
    monkeypatch.undo()
    assert os.listdir(desk.folder / "mailboxes" / "support" / "new") == ["1700000001.A.host"]
    poll_maildirs(desk.app)  # the restarted service sees the same file again
    desk.app.process()
    desk.app.deliver()
    assert RawMessage.select().count() == 1
    assert Ticket.select().count() == 1
    assert len([m for m in desk.to("bob@example.com")]) == 1
    assert os.listdir(desk.folder / "mailboxes" / "support" / "new") == []


def test_crash_before_processing_leaves_the_message_pending_for_the_next_pass(desk, monkeypatch):
    drop(desk, "1700000001.A.host", mail(message_id="a"))
    poll_maildirs(desk.app)
    monkeypatch.setattr("helpdesk.tickets.desk.Desk.new_ticket",
                        lambda *a: (_ for _ in ()).throw(KeyboardInterrupt("killed mid-apply")))
    with pytest.raises(KeyboardInterrupt):
        desk.app.process()
    monkeypatch.undo()
    assert RawMessage.get().status == "pending"   # the transaction rolled back whole
    assert Ticket.select().count() == 0
    desk.app.process()
    assert Ticket.select().count() == 1 and RawMessage.get().status == "done"


def test_hidden_and_missing_maildir_entries_are_ignored(desk):
    folder = desk.folder / "mailboxes" / "support" / "new"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".partial").write_bytes(b"not yet")
    assert maildir.pending_files(folder.parent) == []
    assert maildir.pending_files(desk.folder / "nowhere") == []
