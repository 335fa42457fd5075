"""``helpdesk``: the command line (argparse), one small function per command.

Exit status: 0 success, 1 a user error (one line on stderr, never a
traceback), 2 usage. Every command builds the app through ``app.build``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from helpdesk.clock import Clock, parse_iso
from helpdesk.config.loader import load_config
from helpdesk.disputes import opening, orders
from helpdesk.errors import HelpdeskError, NotFound, UserError
from helpdesk.intake import files, imap
from helpdesk.pipeline.batches import Tally
from helpdesk.reports import digest, listings
from helpdesk.runtime import app as app_module
from helpdesk.runtime import service
from helpdesk.runtime.ingest import ingest_files
from helpdesk.staff import act as staff
from helpdesk.staff import commands

log = logging.getLogger("helpdesk")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except HelpdeskError as exc:
        print(f"helpdesk: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="helpdesk", description="An email-driven helpdesk.")
    parser.add_argument("--config", default=os.environ.get("HELPDESK_CONFIG", "config.toml"),
                        help="config file (default: ./config.toml or $HELPDESK_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the service (SMTP intake, polling, delivery)")
    run.add_argument("--once", action="store_true", help="one pass, then exit")
    run.add_argument("--now", type=_moment, help="with --once: pretend it is this moment (ISO 8601)")
    run.set_defaults(func=cmd_run)

    ingest = sub.add_parser("ingest", help="take raw RFC 5322 files, folders of them, or - for stdin")
    ingest.add_argument("--mailbox", help="mailbox name (default: from the recipients)")
    ingest.add_argument("files", nargs="+", metavar="FILE")
    ingest.set_defaults(func=cmd_ingest)

    tickets = sub.add_parser("tickets", help="list tickets")
    tickets.add_argument("--status", help="only tickets in this status")
    tickets.add_argument("--json", action="store_true", help="machine-readable output")
    tickets.set_defaults(func=cmd_tickets)

    show = sub.add_parser("show", help="show one ticket or dispute with its messages")
    show.add_argument("id", metavar="ID", help="e.g. T-42 or D-7")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=cmd_show)

    # --- staff work from the server (same path as a staff member's mail) ---
    reply = sub.add_parser("reply", help="answer a ticket as an agent (commands allowed, as in a mail)")
    reply.add_argument("id", metavar="ID", help="e.g. T-42")
    reply.add_argument("--from", dest="agent", required=True, help="the agent's address or name")
    reply.add_argument("file", metavar="FILE", help="the answer's text, or - for stdin")
    reply.set_defaults(func=cmd_reply)

    close = sub.add_parser("close", help="resolve a ticket (it closes by itself later)")
    close.add_argument("id", metavar="ID", help="e.g. T-42")
    close.set_defaults(func=cmd_close)

    assign = sub.add_parser("assign", help="assign a ticket to an agent")
    assign.add_argument("id", metavar="ID", help="e.g. T-42")
    assign.add_argument("agent", metavar="AGENT", help="the agent's address or name")
    assign.set_defaults(func=cmd_assign)

    digest_parser = sub.add_parser("digest", help="print the admin digest; --send queues it to the admins")
    digest_parser.add_argument("--send", action="store_true",
                               help="queue it to every admin (once per period) and deliver")
    digest_parser.add_argument("--now", type=_moment, help="pretend it is this moment (ISO 8601)")
    digest_parser.set_defaults(func=cmd_digest)

    _dispute_parsers(sub)

    oauth2 = sub.add_parser("oauth2", help="OAuth2 logins ('oauth2 test NAME' tries one)")
    oauth2_actions = oauth2.add_subparsers(dest="action", required=True, metavar="ACTION")
    oauth2_test = oauth2_actions.add_parser(
        "test", help="log in once with a token; NAME is 'outgoing' (the relay) or a mailbox's name")
    oauth2_test.add_argument("name", metavar="NAME")
    oauth2_test.set_defaults(func=cmd_oauth2_test)

    quarantine = sub.add_parser("quarantine", help="list or retry quarantined mail")
    quarantine.add_argument("action", nargs="?", default="list", choices=("list", "retry"))
    quarantine.add_argument("id", nargs="?", metavar="ID")
    quarantine.set_defaults(func=cmd_quarantine)
    return parser


def _moment(text: str):
    try:
        return parse_iso(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 moment: {text!r}") from None


def _build(args, now=None) -> app_module.App:
    app = app_module.build(args.config, Clock(now))
    _logging(app.config.helpdesk.log_level)
    return app


def _logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level, logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        datefmt="%Y-%m-%d %H:%M:%S")
    # aiosmtpd logs every SMTP command at INFO; our own handler logs what matters.
    logging.getLogger("mail.log").setLevel(max(logging.WARNING, logging.getLogger().level))


# --- commands ----------------------------------------------------------------

def cmd_run(args) -> int:
    if args.now is not None and not args.once:
        raise UserError("--now needs --once: a running service follows the real clock")
    app = _build(args, args.now)
    return service.run(app, once=args.once)


def cmd_ingest(args) -> int:
    app = _build(args)
    named = _named_mailbox(app, args.mailbox)
    paths = files.expand(args.files)
    progress = _Progress(len(paths))
    report = ingest_files(app, paths, named, on_progress=progress.update)
    app.deliver()
    progress.done()
    for path, why in report.unreadable:
        print(f"helpdesk: cannot read {path}: {why}", file=sys.stderr)
    print(_summary(report.tally, report.duplicates, len(report.unreadable)))
    return 1 if report.unreadable else 0


def cmd_tickets(args) -> int:
    _build(args)
    rows = listings.list_tickets(args.status)
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    for row in rows:
        print(f"{row['id']:>8}  {row['status']:<20} {row['messages']:>3} msg  "
              f"{row['requester']:<30} {row['subject']}")
    if not rows:
        print("no tickets" + (f" with status {args.status}" if args.status else ""))
    return 0


def cmd_show(args) -> int:
    _build(args)
    if listings.is_dispute_id(args.id):
        return _show_dispute(listings.dispute_detail(args.id), args.json)
    detail = listings.ticket_detail(args.id)
    if args.json:
        print(json.dumps(detail, indent=2, ensure_ascii=False))
        return 0
    print(f"{detail['id']}  [{detail['status']}]  {detail['subject']}")
    print(f"requester: {detail['requester_name']} <{detail['requester']}>   created {detail['created_at']}")
    _print_conversation(detail, lambda m: f"{m['direction']}  {m['created_at']}  from {m['from']}")
    return 0


def cmd_reply(args) -> int:
    app = _build(args)
    member = staff.find_member(app.config, args.agent)
    try:
        text = files.read(args.file).decode("utf-8", "replace")
    except OSError as exc:
        raise UserError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    try:
        plan = commands.parse(text, member.role, staff.staff_directory(app.config.staff), me=member.address)
    except commands.CommandError as exc:
        raise UserError(str(exc)) from None
    if not plan.text and not plan.commands:
        raise UserError(f"{args.file}: the answer is empty")
    return _staff_action(app, args.id, member, plan)


def cmd_close(args) -> int:
    app = _build(args)
    return _staff_action(app, args.id, staff.SERVER, commands.Plan((commands.StaffCommand("close"),),
                                                                    actions=frozenset({"close"})))


def cmd_assign(args) -> int:
    app = _build(args)
    member = staff.find_member(app.config, args.agent)
    plan = commands.Plan((commands.StaffCommand("assign", member.address),), actions=frozenset({"assign"}))
    return _staff_action(app, args.id, staff.SERVER, plan)


def _staff_action(app, ticket_id: str, member, plan) -> int:
    number = listings.ticket_number(ticket_id)
    if number > listings.MAX_ID:
        raise NotFound(f"no ticket T-{number}")
    ticket = staff.from_command_line(app.desk, number, member, plan)
    app.deliver()
    print(f"T-{number}: {ticket.status}, priority {ticket.priority}, assignee {ticket.assignee or 'nobody'}")
    return 0


def cmd_digest(args) -> int:
    app = _build(args, args.now)
    now = app.clock.now()
    period = digest.current_period(app.config, now)
    if period is None:
        if args.send:
            raise UserError('[digest] schedule is "off": set one (e.g. "daily 08:00") to send digests')
        period = digest.rolling_period(app.config.digest.timezone, now)   # the last 24 hours
    content = digest.build(app.config, now, period)
    print(digest.render(app, content).text, end="")
    if not args.send:
        return 0
    if not digest.admins(app.config):
        raise UserError('no admin to send the digest to (a [[staff]] entry with role = "admin")')
    result = digest.send(app, content)
    if result.already_sent:
        print(f"helpdesk: the digest for {result.period} was sent already; not sent again", file=sys.stderr)
        return 0
    app.deliver()
    print(f"helpdesk: digest {result.period} queued to {result.recipients} admin(s)", file=sys.stderr)
    return 0


def cmd_quarantine(args) -> int:
    app = _build(args)
    if args.action == "retry":
        if not args.id:
            raise UserError("quarantine retry needs an ID (see 'helpdesk quarantine list')")
        outcome = app.pipeline.retry(listings.quarantine_id(args.id))
        app.deliver()
        where = f" T-{outcome.ticket_id}" if outcome.ticket_id else ""
        print(f"message {outcome.raw_id}: {outcome.kind}{where} {outcome.detail}".rstrip())
        return 0 if outcome.kind != "quarantined" else 1
    rows = listings.quarantined()
    for row in rows:
        print(f"{row['id']:>6}  {row['received_at']}  {row['mailbox']:<10} {row['reason']}")
    if not rows:
        print("quarantine is empty")
    return 0


# --- oauth2 test ------------------------------------------------------------------

def cmd_oauth2_test(args) -> int:
    """One line on stdout, or (as every command) one on stderr: the failure is the
    error's own line, so the log's copy of it is kept quiet unless DEBUG was asked for."""
    config = load_config(args.config)
    if config.helpdesk.log_level == "DEBUG":
        _logging("DEBUG")
    else:
        logging.getLogger("helpdesk").addHandler(logging.NullHandler())
    check = _OAUTH2_CHECKS.get(args.name, _oauth2_mailbox)
    print(check(config, args.name))
    return 0


def _oauth2_outgoing(config, name: str) -> str:
    out = config.outgoing
    if out.auth != "oauth2":
        raise UserError(f'[outgoing] logs in with auth = "{out.auth}": nothing to test (see docs/oauth2.md)')
    transport = app_module.build_transport(config)
    try:
        transport.check_login()
    finally:
        transport.close()
    return (f"outgoing relay {transport.relay}: logged in as {out.username} with {transport.login.mechanism}; "
            f"{_expiry(transport.login.token)}")


def _oauth2_mailbox(config, name: str) -> str:
    """Log in to the mailbox's IMAP server once with a token and look into its folder."""
    try:
        mailbox = config.mailbox(name)
    except LookupError:
        names = ", ".join(m.name for m in config.mailboxes)
        raise UserError(f"no mailbox named {name!r}: NAME is 'outgoing' or a mailbox ({names})") from None
    if mailbox.auth != "oauth2":
        raise UserError(f'mailbox {name} logs in with auth = "{mailbox.auth}": nothing to test '
                        "(see docs/oauth2.md)")
    login = imap.Login(mailbox)
    try:
        messages = imap.try_login(mailbox, login)
    except imap.Fault as fault:
        raise UserError(f"mailbox {name}: {fault}") from None
    return (f"mailbox {name}: logged in to {mailbox.imap_host}:{mailbox.imap_port} as {mailbox.imap_user} "
            f"with {login.mechanism}; {mailbox.imap_folder} holds {messages} "
            f"message{'' if messages == 1 else 's'}; {_expiry(login.token)}")


_OAUTH2_CHECKS = {"outgoing": _oauth2_outgoing}      # any other NAME is a mailbox's


def _expiry(token) -> str:
    if token.expires is None:
        return "the token's expiry is not known"
    return f"the token is valid until {token.expires:%Y-%m-%d %H:%M:%S} UTC"


# --- orders and disputes ----------------------------------------------------------

def _dispute_parsers(sub) -> None:
    orders_parser = sub.add_parser("orders", help="the marketplace's orders")
    orders_actions = orders_parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    load = orders_actions.add_parser("import", help="load a CSV or JSON export (a re-import updates)")
    load.add_argument("file", metavar="FILE")
    load.set_defaults(func=cmd_orders_import)

    disputes = sub.add_parser("disputes", help="list disputes; 'disputes open' opens one")
    disputes.add_argument("--status", help="only disputes in this status")
    disputes.add_argument("--json", action="store_true", help="machine-readable output")
    disputes.set_defaults(func=cmd_disputes)
    actions = disputes.add_subparsers(dest="action", metavar="ACTION")
    opening = actions.add_parser("open", help="open a dispute for the buyer (the marketplace's form)")
    opening.add_argument("--order", required=True, help="the order id")
    opening.add_argument("--reason", required=True, help="one of [disputes] reasons")
    opening.add_argument("--description-file", required=True, metavar="FILE",
                         help="the buyer's description (- for stdin)")
    opening.add_argument("--attach", nargs="+", action="extend", default=[], metavar="FILE",
                         help="images or other files from the buyer")
    opening.set_defaults(func=cmd_disputes_open)


def cmd_orders_import(args) -> int:
    app = _build(args)
    report = orders.import_file(Path(args.file), app.clock.now())
    for bad in report.bad:
        print(f"helpdesk: {args.file}:{bad.line}: {bad.reason}", file=sys.stderr)
    print(report.summary())
    return 1 if report.bad else 0


def cmd_disputes(args) -> int:
    from helpdesk.disputes.rules import STATES
    if args.status is not None and args.status not in STATES:
        raise UserError(f"no status {args.status!r}; the statuses are: {', '.join(STATES)}")
    _build(args)
    rows = listings.list_disputes(args.status)
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    for row in rows:
        due = f"  next: {row['deadline']['kind']} {row['deadline']['at']}" if row["deadline"] else ""
        print(f"{row['id']:>7}  {row['status']:<16} order {row['order']:<12} {row['buyer']} -> "
              f"{row['seller']}  {row['reason']}{due}")
    if not rows:
        print("no disputes" + (f" with status {args.status}" if args.status else ""))
    return 0


def cmd_disputes_open(args) -> int:
    app = _build(args)
    try:
        description = files.read(args.description_file).decode("utf-8", "replace")
    except OSError as exc:
        raise UserError(f"cannot read {args.description_file}: {exc.strerror or exc}") from None
    opened = opening.from_form(app.disputes, args.order, args.reason, description,
                                                  [Path(f) for f in args.attach])
    app.deliver()
    print(f"{opened}: opened for order {args.order.strip()}; the buyer and the seller were told")
    return 0


def _show_dispute(detail: dict, as_json: bool) -> int:
    if as_json:
        print(json.dumps(detail, indent=2, ensure_ascii=False))
        return 0
    due = detail["deadline"]
    print(f"{detail['id']}  [{detail['status']}]  order {detail['order']}: {detail['product']}")
    print(f"buyer: {detail['buyer']}   seller: {detail['seller']}   reason: {detail['reason']}")
    print(f"opened {detail['created_at']}" + (f"   next: {due['kind']} {due['at']}" if due else ""))
    if detail["decision"]:
        print(f"decided for the {detail['decided_for']}: {detail['decision']}")
    for p in detail["proposals"]:
        accepted = f" (accepted {p['accepted_at']})" if p["accepted_at"] else ""
        print(f"proposal #{p['number']} by the {p['author']}{accepted}: {p['text']}")
    print("\nhistory:")
    for e in detail["history"]:
        print(f"  {e['at']}  {e['actor']:<24} {e['from'] or '-'} -> {e['to']}  {e['reason']}")
    _print_conversation(detail, lambda m: f"{m['created_at']}  the {m['role'] or '?'} ({m['from']})")
    return 0


def _print_conversation(detail: dict, heading) -> None:
    """The messages of a ticket or a dispute's chat, then the mail sent with its delivery status."""
    for m in detail["messages"]:
        if m.get("kind"):
            continue  # mail the helpdesk sent: listed below with its delivery status
        print(f"\n--- {heading(m)}")
        print(m["body"])
        for a in m["attachments"]:
            state = f"refused: {a['refused']}" if a["refused"] else f"{a['size']} bytes"
            print(f"    [attachment] {a['filename']} ({a['content_type']}, {state})")
    for o in detail["outbox"]:
        print(f"\n>>> {o['kind']} to {o['to']}: {o['status']}" + (f" ({o['last_error']})" if o["last_error"] else ""))


# --- ingest helpers ----------------------------------------------------------

def _named_mailbox(app, name):
    if name is None:
        return None
    try:
        return app.config.mailbox(name)
    except LookupError:
        names = ", ".join(m.name for m in app.config.mailboxes)
        raise UserError(f"no mailbox named {name!r} (configured: {names})") from None


def _summary(tally: Tally, duplicates: int, unreadable: int) -> str:
    c, why = tally.counts, tally.reasons
    dropped = why["dropped"] + why["bounce"]
    parts = [f"{c['new_ticket']} new tickets", f"{c['reply']} threaded replies",
             f"{duplicates} duplicates skipped",
             f"{c['dropped'] + c['bounce']} dropped{_reasons(dropped)}",
             f"{c['quarantined']} quarantined{_reasons(why['quarantined'])}"]
    disputes = sum(n for kind, n in c.items() if kind.startswith("dispute_"))
    if disputes:
        parts.append(f"{disputes} dispute mails ({c['dispute_opened']} opened, "
                     f"{c['dispute_refused']} refused)")
    if unreadable:
        parts.append(f"{unreadable} unreadable")
    return "ingested: " + ", ".join(parts)


def _reasons(counter) -> str:
    if not counter:
        return ""
    return " (" + ", ".join(f"{n} {reason}" for reason, n in sorted(counter.items())) + ")"


class _Progress:
    """A counter on a terminal; silent when stderr is piped."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.active = sys.stderr.isatty() and total > 1

    def update(self, done: int) -> None:
        if self.active:
            print(f"\r{done}/{self.total} messages", end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.active:
            print(file=sys.stderr)
