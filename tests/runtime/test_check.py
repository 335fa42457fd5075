"""``helpdesk check``: every check against the real thing -- the shipped templates and edited
copies, SQLite and PostgreSQL, a private Dovecot (``tests/flows/dovecot.py``), aiosmtpd
relays on 127.0.0.1 with STARTTLS and AUTH -- and the command line's lines and exit codes."""

from __future__ import annotations

import email
import email.policy
import shutil
import uuid
from pathlib import Path

import pytest

from helpdesk import cli
from helpdesk.clock import Clock
from helpdesk.config.loader import load_config
from helpdesk.runtime import check
from helpdesk.runtime.app import TEMPLATES
from helpdesk.store.schema import MIGRATIONS, Meta, Outbox
from tests.conftest import START, Desk, free_port, write_config
from tests.flows import dovecot as dc
from tests.outbound.test_transports import Relay, cert, serve, server_tls  # noqa: F401 - fixtures


def lines(results) -> list[str]:
    return [r.line() for r in results]


def run_check(config: Path, *args: str, capsys) -> tuple[int, list[str], str]:
    code = cli.main(["--config", str(config), "check", *args])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


# --------------------------------------------------------------------- templates


@pytest.fixture
def templates(tmp_path) -> Path:
    """A copy of the shipped templates to break."""
    return Path(shutil.copytree(TEMPLATES, tmp_path / "templates"))


@pytest.fixture
def config(tmp_path):
    return load_config(write_config(tmp_path))


def test_every_shipped_template_renders_with_its_sample(config):
    [result] = check.templates(config, TEMPLATES)
    count = len(list(TEMPLATES.rglob("*.j2")))
    assert result.line() == f"ok    templates: {count} files in {TEMPLATES} render with their sample context"


def test_a_misspelt_variable_names_the_file_and_line(config, templates):
    path = templates / "customer" / "ack.txt.j2"
    path.write_text(path.read_text() + "\nYour ticket: {{ tiket.id }}\n")
    line = len(path.read_text().splitlines())
    assert lines(check.templates(config, templates)) == [
        f"FAIL  templates: customer/ack.txt.j2 line {line}: 'tiket' is undefined"]


def test_a_deployments_own_template_is_checked_as_the_service_would_use_it(tmp_path):
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('data_dir = "var"\n', 'data_dir = "var"\ntemplates_dir = "own"\n', 1))
    (tmp_path / "own" / "customer").mkdir(parents=True)
    (tmp_path / "own" / "customer" / "ack.txt.j2").write_text("Hello {{ nobody }}\n")
    assert lines(check.templates(load_config(path), TEMPLATES)) == [
        "FAIL  templates: customer/ack.txt.j2 line 1: 'nobody' is undefined"]


def test_a_syntax_error_names_the_file_and_line(config, templates):
    (templates / "staff" / "help.subject.j2").write_text("Help for {{ ticket.id }\n")
    assert lines(check.templates(config, templates)) == [
        "FAIL  templates: staff/help.subject.j2 line 1: unexpected '}'"]


def test_a_variable_the_code_does_not_pass_to_that_event_fails(config, templates):
    """``customer/status`` gets no ``ticket`` and no ``recipient``: the sample knows it."""
    path = templates / "customer" / "status.txt.j2"
    path.write_text("Hello {{ recipient }}\n" + path.read_text())
    assert lines(check.templates(config, templates)) == [
        "FAIL  templates: customer/status.txt.j2 line 1: 'recipient' is undefined"]


def test_an_error_in_a_partial_names_the_partial(config, templates):
    (templates / "buyer" / "_dispute_files.txt.j2").write_text("{{ files_list }}\n")
    found = set(lines(check.templates(config, templates)))
    assert found == {"FAIL  templates: buyer/_dispute_files.txt.j2 line 1: 'files_list' is undefined"}


def test_a_missing_template_and_an_unknown_one(config, templates):
    (templates / "customer" / "closed.txt.j2").unlink()
    (templates / "customer" / "old_ack.txt.j2").write_text("{{ whatever }}\n")
    assert lines(check.templates(config, templates)) == [
        f"FAIL  templates: customer/closed.txt.j2 is missing from {templates}",
        "warn  templates: customer/old_ack.txt.j2: no mail of the helpdesk uses it (unknown event)"]


# --------------------------------------------------------------------- the database


def test_a_current_database(desk, db_url):
    results, ready = _database(desk.app.config)
    assert ready is True
    assert results[0].level == "ok" and results[0].line().endswith(f": schema {len(MIGRATIONS)} (current)")


def test_a_database_behind_the_code_is_not_upgraded(desk, db_url):
    Meta.update(value="1").where(Meta.key == "schema_version").execute()
    results, ready = _database(desk.app.config)
    assert ready is False
    assert results[0].line().startswith("FAIL  database: ")
    assert results[0].line().endswith(f": schema 1, expected {len(MIGRATIONS)}: run `helpdesk run` once to upgrade it")
    assert Meta.get(Meta.key == "schema_version").value == "1"


def test_an_unreachable_database(tmp_path):
    port = free_port()
    results, ready = _database(load_config(write_config(tmp_path, db_url=f"postgresql://postgres@127.0.0.1:{port}/x")))
    assert ready is False
    assert results[0].line().startswith(f"FAIL  database: postgresql://postgres@127.0.0.1:{port}/x: ")


def _database(config) -> tuple[list[check.Result], bool]:
    results = []
    generator = check.database(config)
    try:
        while True:
            results.append(next(generator))
    except StopIteration as stop:
        return results, stop.value


def test_a_fresh_folder_is_checked_and_nothing_is_made(tmp_path, capsys):
    config = write_config(tmp_path)
    code, out, err = run_check(config, capsys=capsys)
    assert code == 1
    assert out == [
        f"ok    config: {config} (2 mailboxes, 2 staff)",
        f"warn  secret key: {tmp_path}/var/secret.key is not there yet: it is made (0600) at the first start",
        (f"ok    templates: {len(list(TEMPLATES.rglob('*.j2')))} files in {TEMPLATES} render with their "
        "sample context"),
        f"FAIL  database: {tmp_path}/var/helpdesk.db does not exist yet (`helpdesk run` creates it)",
        f"warn  outgoing: maildir {tmp_path}/mailboxes/outgoing is not there yet (made at the first delivery)"]
    assert err == "helpdesk: 1 check(s) failed\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_a_ready_folder_passes(desk, capsys):
    desk.app.deliver()                                    # the outgoing Maildir is made at the first delivery
    code, out, err = run_check(desk.config_path, capsys=capsys)
    assert (code, err) == (0, "")
    assert [line.split(":")[0] for line in out] == ["ok    config", "ok    secret key", "ok    templates",
                                                    "ok    database", "ok    outgoing"]


def test_a_broken_config_is_one_line(tmp_path, capsys):
    (tmp_path / "config.toml").write_text('[tickets]\nfirst_response = "2 days"\n')
    code, out, _ = run_check(tmp_path / "config.toml", capsys=capsys)
    assert code == 1
    assert out == [f"FAIL  config: {tmp_path}/config.toml: [helpdesk] secret_key_file: missing (required)"]


# --------------------------------------------------------------------- IMAP


@pytest.fixture(scope="module")
def dovecot():
    server = dc.started("check")
    yield server
    server.close()


def imap_config(tmp_path: Path, server: dc.Dovecot, login: str, *, password: str = dc.PASSWORD,
                folder: str = "INBOX", processed: str = "Processed") -> Path:
    (tmp_path / "imap.pw").write_text(password + "\n")
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace(
        'source = "maildir:mailboxes/support"\n',
        f'source = "{server.source(login, folder=folder)}"\npassword_file = "imap.pw"\nstarttls = false\n'
        f'processed_folder = "{processed}"\n'))
    return path


def imap_result(path: Path) -> str:
    config = load_config(path)
    return check.imap_login(config.mailbox("support")).line()


def test_an_imap_mailbox_logs_in_and_its_folders_exist(dovecot, tmp_path):
    login = "u" + uuid.uuid4().hex[:10]
    dovecot.append(login, b"Subject: x\r\n\r\nx\r\n", folder="Processed")
    assert imap_result(imap_config(tmp_path, dovecot, login)) == (
        f"ok    mailbox support: imap://127.0.0.1:{dovecot.port}/INBOX as {login}: logged in; "
        "'INBOX' and 'Processed' exist")


def test_a_missing_processed_folder_is_a_warning_and_is_not_created(dovecot, tmp_path):
    login = "u" + uuid.uuid4().hex[:10]
    assert imap_result(imap_config(tmp_path, dovecot, login, processed="Done")) == (
        f"warn  mailbox support: imap://127.0.0.1:{dovecot.port}/INBOX as {login}: logged in; "
        "processed_folder 'Done' does not exist yet (the first pass creates it)")
    client = dovecot.client(login)
    try:
        assert not client.folder_exists("Done")
    finally:
        client.logout()


def test_a_missing_source_folder_fails(dovecot, tmp_path):
    login = "u" + uuid.uuid4().hex[:10]
    assert imap_result(imap_config(tmp_path, dovecot, login, folder="Support")) == (
        f"FAIL  mailbox support: imap://127.0.0.1:{dovecot.port}/Support as {login}: folder 'Support' "
        "does not exist; check the folder at the end of source")


def test_a_wrong_imap_password_fails_with_the_watchers_words(dovecot, tmp_path):
    login = "u" + uuid.uuid4().hex[:10]
    line = imap_result(imap_config(tmp_path, dovecot, login, password="wrong"))
    assert line.startswith(f"FAIL  mailbox support: login as {login} at 127.0.0.1:{dovecot.port} refused (")
    assert line.endswith("check the password in password_env / password_file")


def test_an_imap_server_that_is_down_fails(tmp_path):
    port = free_port()
    server = type("Down", (), {"source": lambda self, login, folder="INBOX": f"imap://{login}@127.0.0.1:{port}/{folder}"})()
    assert imap_result(imap_config(tmp_path, server, "bob")) == (
        f"FAIL  mailbox support: cannot connect to 127.0.0.1:{port}: connection refused")


# --------------------------------------------------------------------- the relay


def relay_config(tmp_path: Path, port: int, *, password: str = "s3cret", ca: Path | None = None,
                 scheme: str = "smtp") -> Path:
    (tmp_path / "relay.pw").write_text(password + "\n")
    lines_ = [f'transport = "{scheme}://127.0.0.1:{port}"', 'username = "bob"', 'password_file = "relay.pw"',
              'timeout = "5s"']
    if ca is not None:
        lines_.append(f'ca_file = "{ca}"')
    return write_config(tmp_path, outgoing="\n".join(lines_))


@pytest.fixture
def auth_relay(serve, server_tls):  # noqa: F811 - the fixture imported above is used here
    relay = Relay()
    controller = serve(relay, tls_context=server_tls, require_starttls=True, auth_required=True,
                       authenticator=relay.authenticator)
    return relay, controller


def test_the_relay_answers_ehlo_starttls_and_the_login(auth_relay, cert, tmp_path):  # noqa: F811
    relay, controller = auth_relay
    result = check.relay(load_config(relay_config(tmp_path, controller.port, ca=cert[1])))
    assert result.line() == (f"ok    outgoing: smtp://127.0.0.1:{controller.port}: EHLO answered by relay.test, "
                             "STARTTLS, logged in as bob")
    assert [login for _, login in relay.logins] == [b"bob"]
    assert relay.received == []                            # no mail


def test_a_refused_relay_login_fails(auth_relay, cert, tmp_path):  # noqa: F811
    _, controller = auth_relay
    result = check.relay(load_config(relay_config(tmp_path, controller.port, password="guess", ca=cert[1])))
    assert result.line().startswith(f"FAIL  outgoing: smtp://127.0.0.1:{controller.port}: relay rejected login "
                                    "for bob: 535")


def test_an_untrusted_relay_certificate_fails(auth_relay, tmp_path):
    _, controller = auth_relay
    result = check.relay(load_config(relay_config(tmp_path, controller.port)))
    assert result.line().startswith(f"FAIL  outgoing: smtp://127.0.0.1:{controller.port}: relay "
                                    f"127.0.0.1:{controller.port}: TLS certificate not trusted")


def test_a_relay_without_starttls_fails(serve, tmp_path):  # noqa: F811
    controller = serve(Relay())
    result = check.relay(load_config(relay_config(tmp_path, controller.port)))
    assert result.line() == (f"FAIL  outgoing: smtp://127.0.0.1:{controller.port}: relay "
                             f"127.0.0.1:{controller.port} does not offer STARTTLS")


def test_a_relay_that_is_down_fails(tmp_path):
    port = free_port()
    result = check.relay(load_config(relay_config(tmp_path, port)))
    assert result.line() == f"FAIL  outgoing: smtp://127.0.0.1:{port}: relay 127.0.0.1:{port} refused connection"


def test_a_relay_password_that_is_not_set_fails(tmp_path):
    path = write_config(tmp_path, outgoing='transport = "smtp://127.0.0.1:1"\nusername = "bob"\n'
                                           'password_env = "HELPDESK_TEST_UNSET_PASSWORD"')
    result = check.relay(load_config(path))
    assert result.line() == (f'FAIL  outgoing: {path}: [outgoing] password_env: environment variable '
                             '"HELPDESK_TEST_UNSET_PASSWORD" is not set')


# --------------------------------------------------------------------- --send-test


def test_send_test_queues_and_delivers_one_mail(desk, db_url, capsys):
    code, out, _ = run_check(desk.config_path, "--send-test", "me@example.com", capsys=capsys)
    assert code == 0
    assert out[-1] == (f"ok    send-test: a test mail to me@example.com was handed to "
                       f"maildir:{desk.folder}/mailboxes/outgoing (1 attempt(s))")
    [sent] = desk.to("me@example.com")
    assert sent["Subject"] == "Difmark Support: test mail"
    assert sent["From"] == "Difmark Support <support@shop.example>"
    assert sent["Auto-Submitted"] == "auto-generated"
    assert "helpdesk check --send-test" in sent.get_content()
    assert [(o.kind, o.status) for o in Outbox.select()] == [("test", "sent")]


def test_send_test_through_a_relay(auth_relay, cert, tmp_path, capsys):  # noqa: F811
    relay, controller = auth_relay
    config = relay_config(tmp_path, controller.port, ca=cert[1])
    Desk(tmp_path, config, Clock(START)).app.close()     # the database made, as `helpdesk run` would
    code, out, _ = run_check(config, "--send-test", "me@example.com", capsys=capsys)
    assert code == 0
    assert out[-2].startswith("ok    outgoing: ") and out[-1].startswith("ok    send-test: ")
    [(sender, recipients, data)] = relay.received
    assert (sender, recipients) == ("support@shop.example", ["me@example.com"])
    assert email.message_from_bytes(data, policy=email.policy.default)["Subject"] == "Difmark Support: test mail"


def test_send_test_to_a_relay_that_is_down_fails_and_stays_queued(tmp_path, capsys):
    port = free_port()
    config = write_config(tmp_path, outgoing=f'transport = "smtp+plain://127.0.0.1:{port}"')
    Desk(tmp_path, config, Clock(START)).app.close()
    code, out, err = run_check(config, "--send-test", "me@example.com", capsys=capsys)
    assert code == 1
    assert out[-1] == (f"FAIL  send-test: the test mail to me@example.com was not delivered (relay "
                       f"127.0.0.1:{port} refused connection); it stays queued and `helpdesk run` tries again")
    assert err.endswith("helpdesk: 2 check(s) failed\n")
    assert [(o.kind, o.status) for o in Outbox.select()] == [("test", "queued")]


def test_send_test_without_a_database_sends_nothing(tmp_path, capsys):
    config = write_config(tmp_path)
    code, out, _ = run_check(config, "--send-test", "me@example.com", capsys=capsys)
    assert code == 1
    assert out[-1] == "FAIL  send-test: not sent: the database is not ready (see above)"
    assert not (tmp_path / "mailboxes").exists()


def test_send_test_needs_an_address(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["--config", str(write_config(tmp_path)), "check", "--send-test", "me at example"])
    assert stopped.value.code == 2
    assert "argument --send-test: not a bare address like bob@example.com: 'me at example'" in capsys.readouterr().err
