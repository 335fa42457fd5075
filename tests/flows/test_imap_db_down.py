"""An IMAP watcher keeps going while the database is away (found by test_scale_out).

When the database was restarted, the watcher's fault handler tried to note the fault in
the database, that raised too, and the watcher's thread died: the mailbox was not read
again until the process was restarted (or, with other workers, until one took the lease).
"""

from __future__ import annotations

import threading

from helpdesk.clock import Clock
from helpdesk.errors import StoreUnavailable
from helpdesk.intake import imap
from tests.conftest import START, Desk, write_config
from tests.flows.tcp_proxy import TcpProxy
from tests.flows.test_db_faults import pg, url  # noqa: F401 - the fixture


class DownLease:
    """The lease of a worker whose database is away: acquiring it fails, twice."""

    check_every = 0.1

    def __init__(self) -> None:
        self.tries = 0
        self.again = threading.Event()

    def acquire(self, stopping) -> bool:
        self.tries += 1
        if self.tries <= 2:
            raise StoreUnavailable("database unavailable: connection refused")
        self.again.set()
        return False                      # stop here: the watcher came around again

    def release(self) -> None:
        pass


def test_the_watcher_survives_a_fault_it_cannot_note(pg, tmp_path):  # noqa: F811
    _, schema, app_name = pg
    proxy = TcpProxy(("127.0.0.1", 5432))
    proxy.up()
    config = write_config(tmp_path, db_url=url(schema, app_name, proxy.port))
    config.write_text(config.read_text().replace('source = "maildir:mailboxes/support"',
                                                 'source = "imap://u@127.0.0.1:1/INBOX"\npassword_env = "X"'))
    desk = Desk(tmp_path, config, Clock(START))
    try:
        proxy.down()                      # noting the fault in the database fails as well
        lease = DownLease()
        watcher = imap.Watcher(imap.Reader(desk.app.config.mailbox("support"), desk.app.store, 50), lease)
        watcher._sleep = lambda seconds: None
        watcher.start()
        assert lease.again.wait(10), f"the watcher stopped after {lease.tries} faults"
        watcher.stop()
    finally:
        desk.app.close()
        proxy.down()
