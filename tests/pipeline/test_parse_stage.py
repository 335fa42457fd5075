"""The parse stage in its worker process: same results as inline, no hang, no lost mail."""

from __future__ import annotations

import base64
import uuid

from helpdesk.pipeline.parse_stage import MIN_FOR_WORKER
from helpdesk.store.schema import Attachment, RawMessage, Ticket
from tests.conftest import mail


def with_attachment(n: int) -> bytes:
    payload = base64.encodebytes(f"file {n} ".encode() * 200).decode()
    return (f"From: Customer {n} <c{n}@example.com>\nTo: support@shop.example\n"
            f"Subject: order {n}\nMessage-ID: <{uuid.uuid4().hex}@example.com>\nMIME-Version: 1.0\n"
            'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain\n\n'
            f"Please see the log {n}.\n--b\nContent-Type: application/octet-stream\n"
            f'Content-Disposition: attachment; filename="log{n}.txt"\n'
            f"Content-Transfer-Encoding: base64\n\n{payload}--b--\n").encode()


def test_inline_then_worker_batches_in_one_process(desk):
    """A small batch parses inline, a large one in the worker; neither hangs or loses mail."""
    assert desk.app.pipeline.parser.workers >= 1
    desk.ingest(*[with_attachment(n) for n in range(3)])           # inline
    big = [with_attachment(n) for n in range(3, 3 + MIN_FOR_WORKER + 10)]
    desk.ingest(*big)                                               # worker process
    desk.ingest(*[with_attachment(n) for n in range(200, 203)])    # inline again
    total = 3 + MIN_FOR_WORKER + 10 + 3
    assert RawMessage.select().where(RawMessage.status == "done").count() == total
    assert Ticket.select().count() == total
    assert Attachment.select().where(Attachment.sha256.is_null(False)).count() == total
    for row in Attachment.select():
        path = desk.app.desk.attachments.path_for(row.sha256)
        assert path.read_bytes().startswith(b"file ")
    assert desk.app.pipeline.parser._pool is not None   # the worker really ran


def test_worker_results_match_inline_results(desk):
    from helpdesk.pipeline.parse_stage import parse_jobs
    jobs = [(with_attachment(n), ()) for n in range(MIN_FOR_WORKER)] + [(mail(), ())]
    stage = desk.app.pipeline.parser
    inline = parse_jobs(jobs, stage.max_size, stage.store)
    in_worker = stage.submit(jobs)()
    assert in_worker == inline


def test_a_batch_split_between_two_workers_comes_back_whole_and_in_order(desk):
    from helpdesk.pipeline.parse_stage import ParseStage, parse_jobs
    base = desk.app.pipeline.parser
    stage = ParseStage(2, base.max_size, base.store)
    try:
        jobs = [(with_attachment(n), ()) for n in range(MIN_FOR_WORKER + 7)]
        parsed = stage.submit(jobs)()
        assert parsed == parse_jobs(jobs, base.max_size, base.store)
        assert [p.mail.subject for p in parsed] == [f"order {n}" for n in range(MIN_FOR_WORKER + 7)]
        assert len(stage._pool._processes) == 2
    finally:
        stage.close()
