"""``helpdesk``: the command line (argparse), one small function per command.

Exit status: 0 success, 1 a user error (one line on stderr, never a
traceback), 2 usage. Every command builds the app through ``app.build``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from helpdesk.clock import Clock, naive_utc, parse_iso
from helpdesk.config.loader import load_config
from helpdesk.disputes import opening, orders
from helpdesk.disputes.rules import STATES
from helpdesk.errors import HelpdeskError, NotFound, UserError
from helpdesk.intake import files, imap
from helpdesk.outbound import mailq
from helpdesk.pipeline.batches import Tally
from helpdesk.reports import digest, listings
from helpdesk.runtime import app as app_module
from helpdesk.runtime import check, init_folder, logs, membership, pipe, service, status
from helpdesk.runtime.ingest import ingest_files
from helpdesk.staff import act as staff
from helpdesk.staff import commands
from helpdesk.tickets import lifecycle

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
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _install_parsers(sub)

    run = sub.add_parser("run", help="run the service (SMTP intake, polling, delivery)")
    run.add_argument("--once", action="store_true", help="one pass, then exit")
    run.add_argument("--now", type=_moment, help="with --once: pretend it is this moment (ISO 8601)")
    run.add_argument("--only", metavar="ROLES",
                     help="run only these parts, a comma list of: " + ",".join(service.ROLES))
    run.set_defaults(func=cmd_run)

    ingest = sub.add_parser("ingest", help="take raw RFC 5322 files, folders of them, or - for stdin")
    ingest.add_argument("--mailbox", help="mailbox name (default: from the recipients)")
    ingest.add_argument("files", nargs="+", metavar="FILE")
    ingest.set_defaults(func=cmd_ingest)

    tickets = sub.add_parser("tickets", help="list tickets")
    tickets.add_argument("--status", choices=lifecycle.STATUSES, metavar="STATUS",
                         help=f"only tickets in this status: {', '.join(lifecycle.STATUSES)}")
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
    _outbox_parsers(sub)

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
    _health_parsers(sub)
    _explain(sub)
    return parser


def _version() -> str:
    """The installed distribution's (a wheel, or a checkout installed with ``pip install -e``)."""
    try:
        return importlib.metadata.version("helpdesk")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed: run from a checkout without pip install)"


def _moment(text: str):
    try:
        return parse_iso(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 moment: {text!r}") from None


def _build(args, now=None) -> app_module.App:
    app = app_module.build(args.config, Clock(now))
    logs.configure(app.config.helpdesk.log_level, app.config.helpdesk.log_format)
    return app


# --- commands ----------------------------------------------------------------

def cmd_run(args) -> int:
    if args.now is not None and not args.once:
        raise UserError("--now needs --once: a running service follows the real clock")
    roles = service.parse_roles(args.only)      # a wrong role is said before anything starts
    app = _build(args, args.now)
    return service.run(app, once=args.once, roles=roles)


def cmd_ingest(args) -> int:
    if args.files == ["-"]:
        return _pipe(args)
    app = _build(args)
    named = _named_mailbox(app, args.mailbox)
    paths = files.expand(args.files)
    progress = _Progress(len(paths))
    # A worker like `helpdesk run`: killed, its claimed batch is freed by the next start
    # on this host (or another worker's heartbeat), not left to its 5-minute claim.
    with membership.joined(app.clock, app.config.intake.worker_timeout):
        report = ingest_files(app, paths, named, on_progress=progress.update)
        app.deliver()
    progress.done()
    for path, why in report.unreadable:
        print(f"helpdesk: cannot read {path}: {why}", file=sys.stderr)
    print(_summary(report.tally, report.duplicates, len(report.unreadable)))
    return 1 if report.unreadable else 0


def _pipe(args) -> int:
    """Pipe mode for an MTA: the exit status says whether the mail is stored (runtime.pipe)."""
    result = pipe.take(args.config, args.mailbox, getattr(sys.stdin, "buffer", None))
    if result.problem:
        print(f"helpdesk: {result.problem}", file=sys.stderr)
    elif result.duplicate or sum(result.tally.counts.values()):
        print(_summary(result.tally, int(result.duplicate), 0))
    else:
        print(f"stored as message {result.raw_id}; helpdesk run will process it")
    return result.status


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
    app = _build(args)
    held = (naive_utc(app.clock.now()), app.config.limits.bounce_suppression)   # bounces: mail held back
    if listings.is_dispute_id(args.id):
        return _show_dispute(listings.dispute_detail(args.id, *held), args.json)
    detail = listings.ticket_detail(args.id, *held)
    if args.json:
        print(json.dumps(detail, indent=2, ensure_ascii=False))
        return 0
    print(f"{detail['id']}  [{detail['status']}]  {detail['subject']}")
    print(f"requester: {detail['requester_name']} <{detail['requester']}>   created {detail['created_at']}")
    if detail.get("reply_to_unverified"):
        print(f"Reply-To (unverified): {detail['reply_to_unverified']}")
    for line in listings.bounce_lines(detail["bounces"]):
        print(line)
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
        logs.configure("DEBUG", config.helpdesk.log_format)
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


# --- installing ----------------------------------------------------------------

def _install_parsers(sub) -> None:
    init = sub.add_parser("init", help="make a ready folder for an installed helpdesk: config.toml, "
                                       "Maildirs, secret key")
    init.add_argument("folder", nargs="?", default=".", metavar="DIR", help="where (default: here)")
    init.set_defaults(func=cmd_init)


def cmd_init(args) -> int:
    made = init_folder.init_folder(Path(args.folder))
    print(init_folder.describe(made))
    return 0


# --- orders and disputes ----------------------------------------------------------

def _dispute_parsers(sub) -> None:
    orders_parser = sub.add_parser("orders", help="the marketplace's orders")
    orders_actions = orders_parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    load = orders_actions.add_parser("import", help="load a CSV or JSON export (a re-import updates)")
    load.add_argument("file", metavar="FILE")
    load.set_defaults(func=cmd_orders_import)

    disputes = sub.add_parser("disputes", help="list disputes; 'disputes open' opens one")
    disputes.add_argument("--status", choices=tuple(STATES), metavar="STATUS",
                          help=f"only disputes in this status: {', '.join(STATES)}")
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
    for line in listings.bounce_lines(detail["bounces"]):
        print(line)
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
        unverified = "UNVERIFIED sender, held until confirmed: " if m.get("unverified") else ""
        print(f"\n--- {unverified}{heading(m)}")
        print(m["body"])
        for a in m["attachments"]:
            state = f"refused: {a['refused']}" if a["refused"] else f"{a['size']} bytes"
            print(f"    [attachment] {a['filename']} ({a['content_type']}, {state})")
    for o in detail["outbox"]:
        print(f"\n>>> {o['kind']} to {o['to']}: {o['status']}" + (f" ({o['last_error']})" if o["last_error"] else ""))


# --- outgoing mail -----------------------------------------------------------------

def _outbox_parsers(sub) -> None:
    outbox = sub.add_parser("outbox", help="list outgoing mail; 'outbox retry' and 'outbox cancel' act on it")
    outbox.add_argument("--status", choices=mailq.CHOICES,
                        help="only mail in this status (default: queued and failed)")
    outbox.add_argument("--limit", type=_positive, default=100, help="list at most this many (default 100)")
    outbox.add_argument("--json", action="store_true", help="machine-readable output")
    outbox.set_defaults(func=cmd_outbox)
    actions = outbox.add_subparsers(dest="action", metavar="ACTION")
    retry = actions.add_parser("retry", help="put failed mail back in line, then deliver")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", metavar="ID", help="a failed mail's id")
    which.add_argument("--all-failed", action="store_true", help="every failed mail")
    retry.set_defaults(func=cmd_outbox_retry)
    cancel = actions.add_parser("cancel", help="cancel a queued or failed mail (it is kept, never sent)")
    cancel.add_argument("id", metavar="ID")
    cancel.set_defaults(func=cmd_outbox_cancel)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive number: {text!r}")
    return int(text)


def cmd_outbox(args) -> int:
    _build(args)
    rows, total = mailq.listing(args.status, args.limit)
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    print("\n".join(mailq.lines(rows, total, args.status)))
    return 0


def cmd_outbox_retry(args) -> int:
    app = _build(args)
    if args.all_failed:
        print(f"{mailq.retry_all_failed(app.clock)} failed mail(s) back in line")
    else:
        print(f"mail {mailq.retry(args.id, app.clock)} back in line")
    report = app.deliver()
    print(f"delivered: {report.sent} sent, {report.deferred} deferred, {report.failed} failed")
    return 0


def cmd_outbox_cancel(args) -> int:
    _build(args)
    print(f"mail {mailq.cancel(args.id)} cancelled")
    return 0


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


# --- health: check and status ------------------------------------------------------

def _health_parsers(sub) -> None:
    checking = sub.add_parser("check", help="check the config, templates, database, mailboxes and relay")
    checking.add_argument("--send-test", metavar="ADDRESS", type=_address,
                          help="also queue one test mail to ADDRESS and deliver it")
    checking.set_defaults(func=cmd_check)
    state = sub.add_parser("status", help="the service's health, with Nagios exit codes (0, 1, 2)")
    state.add_argument("--json", action="store_true", help="machine-readable output")
    state.add_argument("--now", type=_moment, help="pretend it is this moment (ISO 8601)")
    state.set_defaults(func=cmd_status)


def _address(text: str) -> str:
    if not re.fullmatch(r"[^@\s<>,;]+@[^@\s<>,;]+", text.strip()):
        raise argparse.ArgumentTypeError(f"not a bare address like bob@example.com: {text!r}")
    return text.strip()


def cmd_check(args) -> int:
    failed = 0
    for result in check.run(args.config, args.send_test):
        print(result.line(), flush=True)
        failed += result.level == check.FAIL
    if failed:
        print(f"helpdesk: {failed} check(s) failed", file=sys.stderr)
    return 1 if failed else 0


def cmd_status(args) -> int:
    text, level = status.command(args.config, args.now, args.json)
    print(text)
    return level


# --- what each command says about itself -------------------------------------------

# command (with its action, for nested ones) -> (what it does, examples); shown by --help
EXPLAINED = {
    "run": ("""\
Run the service: the SMTP server, Maildir polling, IMAP (IDLE), processing, deadlines,
the digest and delivery, until Ctrl-C or SIGTERM (the batch in hand is finished first);
SIGHUP re-reads the config. One log line per message and per mail sent. Each part runs
on its own, so a hung relay never holds up new tickets. --only runs some parts: smtp,
imap, maildir (intake), process, deliver, tick (deadlines and the digest).""", """\
helpdesk run
helpdesk --config /etc/helpdesk/config.toml run
helpdesk run --once                              # one pass, then exit (cron)
helpdesk run --once --now 2026-12-01T08:00:00Z   # as if it were that moment
helpdesk run --only smtp                         # an MX host: SMTP intake alone
helpdesk run --only imap,maildir,process,deliver,tick   # the rest, elsewhere"""),
    "ingest": ("""\
Take raw RFC 5322 mail from files, folders of them (a saved Maildir, an export) or
stdin, process it and deliver the mail it causes. Without --mailbox, the mailbox is
found from the recipients. Ends with one line of counts. '-' alone is pipe mode for an MTA:
one mail, exit 0 once it is stored, 75 (try again later) when it could not be.""", """\
helpdesk ingest mail/*.eml
helpdesk ingest --mailbox support ~/Maildir/cur
helpdesk ingest - < message.eml"""),
    "tickets": ("""\
List tickets: id, status, messages, requester and subject.""", """\
helpdesk tickets
helpdesk tickets --status waiting_on_customer
helpdesk tickets --json"""),
    "show": ("""\
Show one ticket (T-n) or dispute (D-n): its messages, attachments and the mail sent
about it, with each one's delivery status.""", """\
helpdesk show T-42
helpdesk show D-7 --json"""),
    "reply": ("""\
Answer a ticket as a staff member, as if by mail: #commands at the top work too.""", """\
helpdesk reply T-42 --from alice@shop.example answer.txt
printf '#close\\nThe new key is on its way.\\n' | helpdesk reply T-42 --from Alice -"""),
    "close": ("""\
Resolve a ticket; it closes by itself after [tickets] auto_close.""", """\
helpdesk close T-42"""),
    "assign": ("""\
Assign a ticket to a staff member (address or name).""", """\
helpdesk assign T-42 alice@shop.example"""),
    "digest": ("""\
Print the admins' digest of the current period; --send also queues it to every admin
(once per period) and delivers it.""", """\
helpdesk digest
helpdesk digest --send
helpdesk digest --now 2026-12-01T08:00:00Z"""),
    "orders": ("""\
The marketplace's orders, which disputes are opened against.""", """\
helpdesk orders import orders.csv"""),
    "orders import": ("""\
Load orders from a CSV or JSON export; a re-import updates. Bad rows are named on
stderr with their line numbers (exit 1); the good ones are imported.""", """\
helpdesk orders import orders.csv
helpdesk orders import export.json"""),
    "disputes": ("""\
List buyer-seller disputes with their next deadline; 'disputes open' opens one.""", """\
helpdesk disputes
helpdesk disputes --status negotiation --json
helpdesk disputes open --order 100234 --reason 'not received' --description-file text.txt"""),
    "disputes open": ("""\
Open a dispute for an order's buyer, as the marketplace's form does; the same checks
as a dispute opened by mail.""", """\
helpdesk disputes open --order 100234 --reason 'not received' \\
    --description-file text.txt --attach photo.png"""),
    "quarantine": ("""\
List the mail the pipeline could not handle, with the reason, or run one again.""", """\
helpdesk quarantine
helpdesk quarantine retry 17"""),
    "check": ("""\
Check that this installation can take mail: the config loads, every template renders,
the database is reachable and its schema current, each IMAP mailbox logs in and its
folders exist, the relay answers EHLO, STARTTLS and the login. One line per check;
exit 1 if any failed. Nothing is changed, unless --send-test sends one mail.""", """\
helpdesk check
helpdesk --config /etc/helpdesk/config.toml check --send-test you@example.com"""),
    "status": ("""\
The service's health: outbox by status and the age of its oldest queued mail, failed
mail, quarantine, each IMAP mailbox's last pass and fault, the last deadline tick,
overdue timers, the schema version. Exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN
(the config cannot be read), as Nagios plugins do; thresholds are [status] keys.""", """\
helpdesk status
helpdesk status --json"""),
    "init": ("""\
Make a ready folder for a helpdesk installed from a wheel: the shipped, commented
config.toml, the Maildirs, the data folder and the secret key (0600). An existing
config.toml is never overwritten.""", """\
helpdesk init /srv/helpdesk
cd /srv/helpdesk && helpdesk init"""),
    "outbox": ("""\
List outgoing mail, oldest first: by default what has not left (queued and failed), with
its attempts, next attempt and the relay's last answer; 'outbox retry' and 'outbox cancel'
act on it.""", """\
helpdesk outbox
helpdesk outbox --status failed --json
helpdesk outbox retry 42
helpdesk outbox retry --all-failed
helpdesk outbox cancel 42"""),
    "outbox retry": ("""\
Put a failed mail (or every failed mail) back in line, due now, and deliver.""", """\
helpdesk outbox retry 42
helpdesk outbox retry --all-failed"""),
    "outbox cancel": ("""\
Cancel a queued or failed mail: it stays listed as cancelled and never leaves.""", """\
helpdesk outbox cancel 42"""),
    "oauth2": ("""\
OAuth2 logins (Microsoft 365, Google Workspace, any provider through token_command):
'oauth2 test NAME' logs in once and says what happened.""", """\
helpdesk oauth2 test outgoing
helpdesk oauth2 test support"""),
    "oauth2 test": ("""\
Log in once with an access token: NAME is 'outgoing' (the SMTP relay) or a mailbox's name.
One line on success (mechanism, account, token expiry); one line on stderr and exit 1
on failure.""", """\
helpdesk oauth2 test outgoing
helpdesk oauth2 test support"""),
}


def _explain(sub, prefix: str = "") -> None:
    """Give every command its description and examples (``--help``), nested actions too."""
    for name, parser in sub.choices.items():
        what, examples = EXPLAINED.get(f"{prefix}{name}", (None, None))
        if what is not None:
            parser.description = what
            parser.epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples.splitlines())
            parser.formatter_class = argparse.RawDescriptionHelpFormatter
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                _explain(action, f"{prefix}{name} ")
