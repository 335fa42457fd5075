"""Two ``helpdesk run`` processes on one database share the work: both registered, every
message processed by one of them, none rolled back because the other had it."""

from __future__ import annotations

import re
import time

from helpdesk.config.loader import load_config
from helpdesk.store import db as store_db
from helpdesk.store import schema
from helpdesk.store.schema import RawMessage, Worker
from tests.conftest import mail, write_config
from tests.runtime.test_signals import Service

COUNT = 300


def _drop(folder, start: int, count: int) -> None:
    new = folder / "mailboxes" / "support" / "new"
    new.mkdir(parents=True, exist_ok=True)
    for n in range(start, start + count):
        (new / f"{n}.eml").write_bytes(mail(subject=f"n{n}", body=f"message {n}\n"))


def test_two_services_on_one_database_split_the_backlog(tmp_path, db_url):
    url = db_url or f"sqlite:///{tmp_path}/shared.db"
    configs = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        configs.append(write_config(tmp_path / name, db_url=url,
                                    extra='[intake]\npoll_interval = "1s"\nbatch_size = 20\n'))
    services = [Service(config) for config in configs]
    try:
        for service in services:
            service.wait_for("helpdesk running")
        store_db.connect(load_config(configs[0]).database.url)
        assert Worker.select().count() == 2
        _drop(tmp_path / "one", 0, COUNT // 2)
        _drop(tmp_path / "two", COUNT // 2, COUNT // 2)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if RawMessage.select().where(RawMessage.status == "done").count() == COUNT:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("not every message was processed")
    finally:
        for service in services:
            service.stop()
    lines = [line for service in services for line in service.lines]
    processed = [len([line for line in service.lines if re.search(r"message \d+: new_ticket", line)])
                 for service in services]
    assert [line for line in lines if "already processed elsewhere" in line] == []
    assert sum(processed) == COUNT and all(processed), processed
    assert Worker.select().count() == 0          # both unregistered
    schema.db.close()
