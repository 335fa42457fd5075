"""What the store's tests share."""

from __future__ import annotations

import pytest

from helpdesk.store import db as store_db
from helpdesk.store import schema, workers


@pytest.fixture
def database(tmp_path, db_url):
    """A connected store on each engine; this process registered as no worker."""
    store_db.connect(db_url or f"sqlite:///{tmp_path}/helpdesk.db")
    yield
    schema.db.close()
    workers._me = None
