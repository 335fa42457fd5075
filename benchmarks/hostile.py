"""Hostile mail benchmark: parse time of a hostile mail against a flat mail of the same size.

    python benchmarks/hostile.py [--size 4MB] [--depth 250] [--parts 20000] [--rounds 3]

Each pair is parsed the way the pipeline parses a message (``parse_jobs``: the
stdlib parser, HTML to text, quote stripping, attachment files written to a
temporary folder), in this process, best of ``--rounds``:

* ``nested``: an HTML-only mail of ``--size`` whose text sits in ``--depth``
  nested ``<blockquote>``s (it took 25 s and 2 GB at 4 MB before the one-pass
  quote marking), against HTML of the same size with no quote;
* ``parts``: ``--parts`` tiny attachments (capped at ``max_parts`` and
  ``max_attachments``), against one plain-text mail of the same size;
* ``subject``: a subject of RFC 2047 encoded words of half ``--size`` (the
  stdlib decodes them in quadratic time; the parser cuts a header to 16 KB
  first), against a plain subject of the same size;
* ``references``: a References header of half ``--size`` that is one run of
  Message-ID characters without "@" (the search for a bare Message-ID scanned
  it again from each position: 16 KB took 1.7 s), against a long thread's
  References of the same size.

It prints each time, the text's length and the ratio hostile/flat; the target
is a ratio of at most 2.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpdesk.pipeline.parse_stage import parse_jobs
from helpdesk.store.attachments import AttachmentStore
from helpdesk.units import parse_size

HEAD = "From: Bob <bob@example.com>\nTo: support@shop.example\nMIME-Version: 1.0\n"
PARA = "<p>" + "quoted text of an earlier message in the thread " * 3 + "</p>\n"
TARGET = 2.0


def nested_html(size: int, depth: int) -> bytes:
    per = max(1, size // (depth * len(PARA)))
    body = "<p>new text</p>" + ("<blockquote>" + PARA * per) * depth + "</blockquote>" * depth
    return _html(body)


def flat_html(size: int) -> bytes:
    return _html("<p>new text</p>" + PARA * (size // len(PARA)))


def _html(body: str) -> bytes:
    return (HEAD + "Subject: html\nContent-Type: text/html; charset=utf-8\n\n" + body).encode()


def many_parts(size: int, parts: int) -> bytes:
    """``parts`` attachments sharing ``size`` bytes between them."""
    each = "x" * max(1, size // parts - 90)
    body = "".join(f'--b\nContent-Type: application/octet-stream\nContent-Disposition: attachment; '
                   f'filename="p{i}.bin"\n\n{i}{each}\n' for i in range(parts))
    return (HEAD + 'Subject: parts\nContent-Type: multipart/mixed; boundary="b"\n\n'
            "--b\nContent-Type: text/plain\n\nsee the files\n" + body + "--b--\n").encode()


def flat_text(size: int) -> bytes:
    line = "plain text of an ordinary long message, line after line\n"
    return (HEAD + "Subject: text\nContent-Type: text/plain; charset=utf-8\n\n"
            + line * (size // len(line))).encode()


def encoded_subject(size: int) -> bytes:
    words = " ".join(["=?utf-8?q?caf=C3=A9_au_lait?="] * (size // 30))
    return (HEAD + f"Subject: {words}\nContent-Type: text/plain\n\nbody\n").encode()


def plain_subject(size: int) -> bytes:
    words = " ".join(["coffee au lait and more text"] * (size // 30))
    return (HEAD + f"Subject: {words}\nContent-Type: text/plain\n\nbody\n").encode()


def references_run(size: int) -> bytes:
    """One run of Message-ID characters without "@" (each position of it was searched again)."""
    return (HEAD + f"Subject: refs\nReferences: {'A' * size} <a@b\nContent-Type: text/plain\n\nbody\n").encode()


def plain_references(size: int) -> bytes:
    """A long thread's References: Message-IDs in angle brackets, as clients write them."""
    ids = " ".join(f"<{n:012d}.thread@mail.example>" for n in range(size // 36))
    return (HEAD + f"Subject: refs\nReferences: {ids}\nContent-Type: text/plain\n\nbody\n").encode()


def timed(raw: bytes, store: AttachmentStore, rounds: int) -> tuple[float, int]:
    best, length = float("inf"), 0
    for _ in range(rounds):
        started = time.perf_counter()
        [parsed] = parse_jobs([(raw, ())], 1 << 30, store)
        best = min(best, time.perf_counter() - started)
        length = len(parsed.mail.text) if not isinstance(parsed, str) else -1
    return best, length


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="4MB")
    parser.add_argument("--depth", type=int, default=250)
    parser.add_argument("--parts", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    pairs = [(f"nested ({args.depth} blockquotes)", nested_html(size, args.depth), flat_html(size)),
             (f"parts ({args.parts} attachments)", many_parts(size, args.parts), flat_text(size)),
             ("subject (RFC 2047 words)", encoded_subject(size // 2), plain_subject(size // 2)),
             ("references (a run without @)", references_run(size // 2), plain_references(size // 2))]
    ok = True
    with tempfile.TemporaryDirectory() as folder:
        store = AttachmentStore(Path(folder), 1 << 30, 1 << 30)
        print(f"{'case':32} {'hostile: time, size, text':>30} {'flat: time, size, text':>30} {'ratio':>6}")
        for name, hostile, flat in pairs:
            (h, h_len), (f, f_len) = timed(hostile, store, args.rounds), timed(flat, store, args.rounds)
            ratio = h / f if f else float("inf")
            ok &= ratio <= TARGET
            print(f"{name:32} {h:7.3f} s {len(hostile) >> 10:6} KB {h_len >> 10:6} KB "
                  f"{f:7.3f} s {len(flat) >> 10:6} KB {f_len >> 10:6} KB "
                  f"{ratio:6.2f}{'' if ratio <= TARGET else '  over the target'}")
    print(f"target: ratio <= {TARGET:g}: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
