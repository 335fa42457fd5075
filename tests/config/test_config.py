"""config.toml -> Config: resolved values, defaults and one-line errors."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path

import pytest

from helpdesk.config.loader import load_config
from helpdesk.config.settings import Config
from helpdesk.errors import ConfigError
from helpdesk.units import format_duration, parse_duration, parse_size

HELPDESK = '[helpdesk]\nsecret_key_file = "secret.key"\n'
MAILBOX = '[[mailboxes]]\nname = "support"\naddress = "support@example.com"\n'
MINIMAL = HELPDESK + MAILBOX

FULL = """
[helpdesk]
name = "Acme Support"
secret_key_file = "keys/secret.key"
timezone = "Europe/Berlin"
data_dir = "/srv/helpdesk"
attachments_dir = "files"
log_level = "debug"

[database]
url = "sqlite:///db/helpdesk.db"

[[mailboxes]]
name = "support"
address = "Support@Example.COM"

[[mailboxes]]
name = "disputes"
address = "disputes@example.com"
kind = "disputes"
source = "imaps://user%40example.com@imap.example.com/Disputes"
password_file = "imap.pw"
processed_folder = "Done"
ca_file = "ca.pem"
poll_interval = "2m"

[[mailboxes]]
name = "local-imap"
address = "local@example.com"
source = "imap://bob@127.0.0.1"
password_env = "LOCAL_IMAP_PW"
starttls = false

[[mailboxes]]
name = "outbound_only"
address = "noreply@example.com"
source = "none"

[smtp_server]
enabled = false
listen = "[::1]:2526"

[outgoing]
transport = "smtp://smtp.example.com:587"
username = "mailer"
password_env = "SMTP_PW"
timeout = "1m"
max_attempts = 3
retry_delay = "5m"
poll_interval = "10s"

[[staff]]
address = "Alice@Example.com"
name = "Alice"
role = "admin"

[[staff]]
address = "bob+helpdesk@example.org"
name = "Bob"

[tickets]
first_response = "1d"

[limits]
max_message_size = "50MB"
max_attachment_size = 1048576
max_attachments_total = "30M"
ack_rate_limit = 0
ack_rate_window = "1d"

[intake]
poll_interval = "30s"
batch_size = 10000
"""


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own folder, so file names stay "config.toml"."""
    monkeypatch.chdir(tmp_path)


def load(text: str) -> Config:
    Path("config.toml").write_text(text, encoding="utf-8")
    return load_config("config.toml")


def error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(text)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    return message


# --------------------------------------------------------------- valid configs


def test_full_config_is_resolved(tmp_path: Path) -> None:
    Path("imap.pw").write_text("s3cret\n")
    Path("ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    config = load(FULL)

    assert config.path == tmp_path / "config.toml"
    assert config.base_dir == tmp_path
    hd = config.helpdesk
    assert hd.name == "Acme Support"
    assert hd.secret_key_file == tmp_path / "keys" / "secret.key"
    assert hd.timezone == "Europe/Berlin"
    assert hd.data_dir == Path("/srv/helpdesk")
    assert hd.attachments_dir == tmp_path / "files"
    assert hd.log_level == "DEBUG"
    assert config.database.url == f"sqlite:///{tmp_path}/db/helpdesk.db"

    support, disputes, local, outbound = config.mailboxes
    assert support.address == "support@example.com"
    assert support.kind == "tickets"
    assert support.source == "maildir:mailboxes/support"
    assert support.source_kind == "maildir"
    assert support.maildir == tmp_path / "mailboxes" / "support"
    assert support.imap_host is None and support.imap_port is None

    assert disputes.kind == "disputes"
    assert disputes.source_kind == "imaps"
    assert disputes.maildir is None
    assert disputes.imap_host == "imap.example.com"
    assert disputes.imap_port == 993
    assert disputes.imap_user == "user@example.com"
    assert disputes.imap_folder == "Disputes"
    assert disputes.password_file == tmp_path / "imap.pw"
    assert disputes.password() == "s3cret"
    assert disputes.ca_file == tmp_path / "ca.pem"
    assert disputes.processed_folder == "Done"
    assert disputes.poll_interval == dt.timedelta(minutes=2)
    assert disputes.starttls is False  # imaps is TLS from the start

    assert (local.source_kind, local.imap_host, local.imap_port) == (
        "imap",
        "127.0.0.1",
        143,
    )
    assert (local.imap_user, local.imap_folder, local.starttls) == (
        "bob",
        "INBOX",
        False,
    )
    assert local.password_env == "LOCAL_IMAP_PW"
    assert outbound.source_kind == "none" and outbound.maildir is None

    assert (config.smtp_server.enabled, config.smtp_server.host) == (False, "::1")
    assert config.smtp_server.port == 2526

    out = config.outgoing
    assert out.transport == "smtp://smtp.example.com:587"
    assert (out.username, out.password_env, out.password_file) == (
        "mailer",
        "SMTP_PW",
        None,
    )
    assert out.timeout == dt.timedelta(minutes=1)
    assert out.max_attempts == 3
    assert out.retry_delay == dt.timedelta(minutes=5)
    assert out.poll_interval == dt.timedelta(seconds=10)

    alice, bob = config.staff
    assert (alice.address, alice.name, alice.role) == (
        "alice@example.com",
        "Alice",
        "admin",
    )
    assert (bob.address, bob.role) == ("bob+helpdesk@example.org", "agent")

    assert config.tickets.first_response == dt.timedelta(days=1)
    assert config.limits.max_message_size == 50 * 1024**2
    assert config.limits.max_attachment_size == 1048576
    assert config.limits.max_attachments_total == 30 * 1024**2
    assert config.limits.ack_rate_limit == 0
    assert config.limits.ack_rate_window == dt.timedelta(days=1)
    assert config.intake.poll_interval == dt.timedelta(seconds=30)
    assert config.intake.batch_size == 10000


def test_defaults(tmp_path: Path) -> None:
    config = load(MINIMAL)
    hd = config.helpdesk
    assert hd.name == "Helpdesk"
    assert hd.timezone == "UTC"
    assert hd.data_dir == tmp_path / "var"
    assert hd.attachments_dir == tmp_path / "var" / "attachments"
    assert hd.log_level == "INFO"
    assert config.database.url == f"sqlite:///{tmp_path}/var/helpdesk.db"
    (mailbox,) = config.mailboxes
    assert mailbox.kind == "tickets"
    assert mailbox.source == "maildir:mailboxes/support"
    assert mailbox.maildir == tmp_path / "mailboxes" / "support"
    assert mailbox.processed_folder == "Processed"
    assert mailbox.poll_interval == dt.timedelta(seconds=60)
    assert mailbox.password_env is None and mailbox.password() is None
    assert config.smtp_server == type(config.smtp_server)(True, "127.0.0.1", 2525)
    out = config.outgoing
    assert out.transport == f"maildir:{tmp_path}/mailboxes/outgoing"
    assert out.username is None and out.password() is None
    assert out.timeout == dt.timedelta(seconds=30)
    # an MTA's schedule (issue 12): no count of attempts, given up after 5 days
    assert out.max_attempts is None
    assert out.give_up_after == dt.timedelta(days=5)
    assert out.retry_max_delay == dt.timedelta(hours=1)
    assert out.retry_delay == dt.timedelta(minutes=1)
    assert out.poll_interval == dt.timedelta(seconds=5)
    assert config.staff == ()
    assert config.tickets.first_response == dt.timedelta(hours=4)
    assert config.limits.max_message_size == 25 * 1024**2
    assert config.limits.max_attachment_size == 10 * 1024**2
    assert config.limits.max_attachments_total == 20 * 1024**2
    assert config.limits.ack_rate_limit == 5
    assert config.limits.ack_rate_window == dt.timedelta(hours=1)
    assert config.intake.poll_interval == dt.timedelta(seconds=5)
    assert config.intake.batch_size == 200


def test_loading_creates_nothing(tmp_path: Path) -> None:
    load(MINIMAL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_imap_starttls_defaults_to_true() -> None:
    config = load(
        HELPDESK + '[[mailboxes]]\nname = "a"\naddress = "a@example.com"\n'
        'source = "imap://a@mail.example.com:1143/Support"\npassword_env = "PW"\n'
    )
    (mailbox,) = config.mailboxes
    assert (mailbox.starttls, mailbox.imap_port, mailbox.imap_folder) == (
        True,
        1143,
        "Support",
    )


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///:memory:",
        "postgresql://u:p@db/helpdesk",
        "postgres://db/helpdesk",
        "sqlite:////abs/x.db",
    ],
)
def test_database_urls_kept(url: str) -> None:
    assert load(MINIMAL + f'[database]\nurl = "{url}"\n').database.url == url


def test_config_path_as_given_elsewhere(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "helpdesk.toml").write_text(MINIMAL)
    config = load_config(tmp_path / "etc" / "helpdesk.toml")
    assert config.base_dir == tmp_path / "etc"
    assert config.helpdesk.secret_key_file == tmp_path / "etc" / "secret.key"


def test_existing_secret_key_file_is_accepted(tmp_path: Path) -> None:
    Path("secret.key").write_text("x" * 32)
    assert load(MINIMAL).helpdesk.secret_key_file == tmp_path / "secret.key"


def test_config_is_frozen() -> None:
    config = load(MINIMAL)
    with pytest.raises(AttributeError):
        config.limits.ack_rate_limit = 3  # type: ignore[misc]


# --------------------------------------------------------------- lookups


def two_mailboxes() -> Config:
    return load(
        HELPDESK
        + MAILBOX
        + '[[mailboxes]]\nname = "disputes"\naddress = "Disputes@Example.com"\n'
        '[[staff]]\naddress = "alice@example.com"\nname = "Alice"\n'
    )


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("support@example.com", "support"),
        ("SUPPORT@EXAMPLE.COM", "support"),
        ("support+order-1234@example.com", "support"),
        ("Support+Tag+More@Example.Com", "support"),
        ("Customer Care <support+x@example.com>", "support"),
        ("disputes@example.com", "disputes"),
        ("support@example.org", None),
        ("supportx@example.com", None),
        ("", None),
        ("not an address", None),
    ],
)
def test_mailbox_for_address(address: str, expected: str | None) -> None:
    found = two_mailboxes().mailbox_for_address(address)
    assert (found.name if found else None) == expected


def test_mailbox_staff_and_own_addresses() -> None:
    config = two_mailboxes()
    assert config.mailbox("disputes").address == "disputes@example.com"
    with pytest.raises(LookupError):
        config.mailbox("sales")
    assert config.own_addresses == frozenset(
        {"support@example.com", "disputes@example.com"}
    )
    assert config.staff_member("Alice@Example.com").name == "Alice"
    assert config.staff_member("mallory@example.com") is None


def test_outgoing_password_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load(MINIMAL + '[outgoing]\nusername = "u"\npassword_env = "HD_SMTP_PW"\n')
    monkeypatch.setenv("HD_SMTP_PW", "hunter2")
    assert config.outgoing.password() == "hunter2"
    monkeypatch.delenv("HD_SMTP_PW")
    with pytest.raises(ConfigError) as info:
        config.outgoing.password()
    assert str(info.value) == (
        'config.toml: [outgoing] password_env: environment variable "HD_SMTP_PW" is not set'
    )


# --------------------------------------------------------------- parse/format helpers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("45s", dt.timedelta(seconds=45)),
        ("30m", dt.timedelta(minutes=30)),
        ("4h", dt.timedelta(hours=4)),
        ("48h", dt.timedelta(hours=48)),
        ("3d", dt.timedelta(days=3)),
        ("1w", dt.timedelta(weeks=1)),
        (" 0s ", dt.timedelta(0)),
    ],
)
def test_parse_duration(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["", "4", "h", "2 days", "1.5h", "-1h", "4H", "3y", "4h30m", 4]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (1048576, 1048576),
        ("1048576", 1048576),
        ("100B", 100),
        ("512KB", 512 * 1024),
        ("512k", 512 * 1024),
        ("25MB", 25 * 1024**2),
        ("25mb", 25 * 1024**2),
        ("25M", 25 * 1024**2),
        ("1GB", 1024**3),
        ("1g", 1024**3),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text", ["", "MB", "1.5MB", "-1", -1, "10TB", "ten", True, 2.5]
)
def test_parse_size_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        parse_size(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("td", "expected"),
    [
        (dt.timedelta(hours=4), "4 hours"),
        (dt.timedelta(days=1), "1 day"),
        (dt.timedelta(minutes=30), "30 minutes"),
        (dt.timedelta(days=2, hours=4), "2 days 4 hours"),
        (dt.timedelta(hours=1, minutes=1), "1 hour 1 minute"),
        (dt.timedelta(seconds=45), "45 seconds"),
        (dt.timedelta(weeks=1), "7 days"),
        (dt.timedelta(0), "0 seconds"),
    ],
)
def test_format_duration(td: dt.timedelta, expected: str) -> None:
    assert format_duration(td) == expected


# --------------------------------------------------------------- errors


def test_missing_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("config.toml")
    assert (
        str(info.value)
        == "config.toml: cannot read: [Errno 2] No such file or directory"
    )


def test_config_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    with pytest.raises(ConfigError) as info:
        load_config("conf.d")
    assert str(info.value) == "conf.d: cannot read: [Errno 21] Is a directory"


def test_not_toml() -> None:
    text = MINIMAL + "[limits]\nmax_message_size = \n"
    with pytest.raises(tomllib.TOMLDecodeError) as toml_error:
        tomllib.loads(text)
    assert error(text) == f"config.toml: not valid TOML: {toml_error.value}"
    assert error(text).endswith("(at line 7, column 20)")


def test_not_utf8() -> None:
    Path("config.toml").write_bytes(b'[helpdesk]\nname = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        load_config("config.toml")
    assert str(info.value).startswith("config.toml: not valid TOML: not UTF-8 text")


def test_errors_name_the_file_as_given(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "helpdesk.toml").write_text("[foo]\n")
    with pytest.raises(ConfigError) as info:
        load_config(Path("etc/helpdesk.toml"))
    assert str(info.value) == "etc/helpdesk.toml: unknown section [foo]"


def test_secret_key_file_is_a_directory(tmp_path: Path) -> None:
    Path("secret.key").mkdir()
    assert error(MINIMAL) == (
        f'config.toml: [helpdesk] secret_key_file: "{tmp_path}/secret.key" is not a regular file'
    )


def test_password_file_missing(tmp_path: Path) -> None:
    text = MINIMAL + '[outgoing]\nusername = "u"\npassword_file = "smtp.pw"\n'
    assert error(text) == (
        f'config.toml: [outgoing] password_file: cannot read "{tmp_path}/smtp.pw": '
        "[Errno 2] No such file or directory"
    )


def test_ca_file_missing_in_mailbox(tmp_path: Path) -> None:
    text = HELPDESK + MAILBOX + 'ca_file = "/nonexistent/ca.pem"\n'
    assert error(text) == (
        'config.toml: [[mailboxes]] #1 (support) ca_file: cannot read "/nonexistent/ca.pem": '
        "[Errno 2] No such file or directory"
    )


MB2 = '[[mailboxes]]\nname = "disputes"\naddress = "disputes@example.com"\n'
IMAP = 'source = "imaps://u@imap.example.com/INBOX"\n'

ERRORS = [
    # sections and keys
    ("[foo]\n" + MINIMAL, "config.toml: unknown section [foo]"),
    (MINIMAL + "[[foo]]\na = 1\n", "config.toml: unknown section [[foo]]"),
    (
        "debug = true\n" + MINIMAL,
        'config.toml: unknown key "debug" outside any section',
    ),
    (
        MINIMAL + "[limits]\nmax_size = 1\n",
        'config.toml: [limits] unknown key "max_size"',
    ),
    (
        MINIMAL + MB2 + 'adress = "x@example.com"\n',
        'config.toml: [[mailboxes]] #2 (disputes) unknown key "adress"',
    ),
    (
        MINIMAL + '[[mailboxes]]\nadress = "x@example.com"\n',
        'config.toml: [[mailboxes]] #2 unknown key "adress"',
    ),
    ("tickets = 5\n" + MINIMAL, "config.toml: [tickets]: expected a table, got 5"),
    (
        HELPDESK + '[mailboxes]\nname = "a"\n',
        "config.toml: [[mailboxes]]: expected an array of tables, got a table",
    ),
    (
        "mailboxes = [1]\n" + HELPDESK,
        "config.toml: [[mailboxes]] #1: expected a table, got 1",
    ),
    # required things
    (MAILBOX, "config.toml: [helpdesk] secret_key_file: missing (required)"),
    (
        '[helpdesk]\nname = "x"\n' + MAILBOX,
        "config.toml: [helpdesk] secret_key_file: missing (required)",
    ),
    (HELPDESK, "config.toml: [[mailboxes]]: at least one mailbox is required"),
    (
        "mailboxes = []\n" + HELPDESK,
        "config.toml: [[mailboxes]]: at least one mailbox is required",
    ),
    (
        HELPDESK + '[[mailboxes]]\nname = "support"\n',
        "config.toml: [[mailboxes]] #1 (support) address: missing (required)",
    ),
    (
        MINIMAL + '[[staff]]\nname = "Alice"\n',
        "config.toml: [[staff]] #1 address: missing (required)",
    ),
    # types
    (
        MINIMAL + '[limits]\nack_rate_limit = "five"\n',
        'config.toml: [limits] ack_rate_limit: expected an integer, got "five"',
    ),
    (
        MINIMAL + "[limits]\nack_rate_limit = true\n",
        "config.toml: [limits] ack_rate_limit: expected an integer, got true",
    ),
    (
        MINIMAL + "[smtp_server]\nenabled = 1\n",
        "config.toml: [smtp_server] enabled: expected true or false, got 1",
    ),
    (
        '[helpdesk]\nsecret_key_file = ["a"]\n' + MAILBOX,
        "config.toml: [helpdesk] secret_key_file: expected a string, got a list",
    ),
    (
        '[helpdesk]\nsecret_key_file = ""\n' + MAILBOX,
        "config.toml: [helpdesk] secret_key_file: must not be empty",
    ),
    # ranges
    (
        MINIMAL + "[limits]\nack_rate_limit = -1\n",
        "config.toml: [limits] ack_rate_limit: must be at least 0, got -1",
    ),
    (
        MINIMAL + "[intake]\nbatch_size = 0\n",
        "config.toml: [intake] batch_size: must be between 1 and 10000, got 0",
    ),
    (
        MINIMAL + "[outgoing]\nmax_attempts = 0\n",
        "config.toml: [outgoing] max_attempts: must be at least 1, got 0",
    ),
    # durations and sizes
    (
        MINIMAL + '[tickets]\nfirst_response = "2 days"\n',
        'config.toml: [tickets] first_response: "2 days" is not a duration like "30m", "4h", "48h" or "3d"',
    ),
    (
        MINIMAL + "[tickets]\nfirst_response = 4\n",
        'config.toml: [tickets] first_response: 4 is not a duration like "30m", "4h", "48h" or "3d"',
    ),
    (
        MINIMAL + '[intake]\npoll_interval = "0s"\n',
        'config.toml: [intake] poll_interval: "0s" must be longer than zero',
    ),
    (
        MINIMAL + '[limits]\nmax_message_size = "25 megabytes"\n',
        'config.toml: [limits] max_message_size: "25 megabytes" is not a size like "512KB", "25MB" or "1GB"',
    ),
    (
        MINIMAL + "[limits]\nmax_attachment_size = 0\n",
        "config.toml: [limits] max_attachment_size: 0 must be larger than zero",
    ),
    # choices
    (
        MINIMAL + MB2 + 'kind = "ticket"\n',
        'config.toml: [[mailboxes]] #2 (disputes) kind: "ticket" is not one of "tickets", "disputes"',
    ),
    (
        '[helpdesk]\nsecret_key_file = "k"\nlog_level = "verbose"\n' + MAILBOX,
        'config.toml: [helpdesk] log_level: "verbose" is not one of "DEBUG", "INFO", "WARNING", "ERROR"',
    ),
    (
        MINIMAL + '[[staff]]\naddress = "a@example.com"\nname = "A"\nrole = "root"\n',
        'config.toml: [[staff]] #1 role: "root" is not one of "agent", "admin"',
    ),
    # names and addresses
    (
        HELPDESK + '[[mailboxes]]\nname = "Support Desk"\naddress = "s@example.com"\n',
        'config.toml: [[mailboxes]] #1 name: "Support Desk" must be made of lower-case letters, digits, "_" and "-"',
    ),
    (
        HELPDESK
        + '[[mailboxes]]\nname = "support"\naddress = "Support <support@example.com>"\n',
        (
            'config.toml: [[mailboxes]] #1 (support) address: "Support <support@example.com>" '
            'is not a bare address like "support@example.com"'
        ),
    ),
    (
        HELPDESK
        + '[[mailboxes]]\nname = "support"\naddress = "support+x@example.com"\n',
        (
            'config.toml: [[mailboxes]] #1 (support) address: "support+x@example.com" '
            'must not contain "+" (tagged addresses match anyway)'
        ),
    ),
    (
        MINIMAL + '[[staff]]\naddress = "alice"\nname = "A"\n',
        'config.toml: [[staff]] #1 address: "alice" is not a bare address like "support@example.com"',
    ),
    # duplicates
    (
        MINIMAL + '[[mailboxes]]\nname = "support"\naddress = "other@example.com"\n',
        'config.toml: [[mailboxes]] #2 (support) name: "support" is already used by mailbox #1',
    ),
    (
        MINIMAL + '[[mailboxes]]\nname = "other"\naddress = "SUPPORT@example.com"\n',
        'config.toml: [[mailboxes]] #2 (other) address: "support@example.com" is already used by mailbox #1',
    ),
    (
        MINIMAL + '[[staff]]\naddress = "a@example.com"\nname = "A"\n'
        '[[staff]]\naddress = "A@example.com"\nname = "B"\n',
        'config.toml: [[staff]] #2 address: "a@example.com" is already used by staff member #1',
    ),
    (
        MINIMAL + '[[staff]]\naddress = "support+me@example.com"\nname = "A"\n',
        'config.toml: [[staff]] #1 address: "support+me@example.com" is a mailbox address',
    ),
    # listen, URLs, sources, transports
    (
        MINIMAL + '[smtp_server]\nlisten = "2525"\n',
        'config.toml: [smtp_server] listen: "2525" is not a host:port like "127.0.0.1:2525" or "[::1]:2525"',
    ),
    (
        MINIMAL + '[smtp_server]\nlisten = "::1:2525"\n',
        'config.toml: [smtp_server] listen: "::1:2525" is not a host:port like "127.0.0.1:2525" or "[::1]:2525"',
    ),
    (
        MINIMAL + '[smtp_server]\nlisten = "127.0.0.1:70000"\n',
        'config.toml: [smtp_server] listen: "127.0.0.1:70000" is not a host:port like "127.0.0.1:2525" or "[::1]:2525"',
    ),
    (
        MINIMAL + '[database]\nurl = "mysql://db/helpdesk"\n',
        (
            'config.toml: [database] url: "mysql://db/helpdesk" is not a database URL like '
            '"sqlite:///var/helpdesk.db" or "postgresql://host/db"'
        ),
    ),
    (
        MINIMAL + MB2 + 'source = "pop3://u@pop.example.com"\n',
        (
            'config.toml: [[mailboxes]] #2 (disputes) source: "pop3://u@pop.example.com" is not a source like '
            '"maildir:mailboxes/support", "imaps://user@host:993/INBOX" or "none"'
        ),
    ),
    (
        MINIMAL
        + MB2
        + 'source = "imaps://imap.example.com/INBOX"\npassword_env = "PW"\n',
        (
            'config.toml: [[mailboxes]] #2 (disputes) source: "imaps://imap.example.com/INBOX" has no user, '
            'expected a URL like "imaps://user@host:993/INBOX"'
        ),
    ),
    (
        MINIMAL
        + MB2
        + 'source = "imaps://u@imap.example.com:x/INBOX"\npassword_env = "PW"\n',
        (
            'config.toml: [[mailboxes]] #2 (disputes) source: "imaps://u@imap.example.com:x/INBOX" '
            "has a bad port number"
        ),
    ),
    (
        MINIMAL + MB2 + 'source = "imaps://u:pw@imap.example.com/INBOX"\n',
        (
            'config.toml: [[mailboxes]] #2 (disputes) source: "imaps://u:pw@imap.example.com/INBOX" '
            "contains a password: use password_env or password_file"
        ),
    ),
    (
        MINIMAL + MB2 + IMAP,
        (
            "config.toml: [[mailboxes]] #2 (disputes) password_env: "
            "missing (an IMAP source needs password_env or password_file)"
        ),
    ),
    (
        MINIMAL + MB2 + IMAP + 'password_env = "PW"\npassword_file = "config.toml"\n',
        "config.toml: [[mailboxes]] #2 (disputes) password_file: give password_env or password_file, not both",
    ),
    (
        MINIMAL + MB2 + IMAP + 'password_env = "MY-PW"\n',
        'config.toml: [[mailboxes]] #2 (disputes) password_env: "MY-PW" is not an environment variable name',
    ),
    (
        MINIMAL + '[outgoing]\ntransport = "lmtp://localhost"\n',
        (
            'config.toml: [outgoing] transport: "lmtp://localhost" is not a transport like '
            '"maildir:mailboxes/outgoing", "smtp://host:25", "smtps://host:465" or "smtp+plain://host:25"'
        ),
    ),
    (
        MINIMAL + '[outgoing]\ntransport = "smtp://"\n',
        'config.toml: [outgoing] transport: "smtp://" has no host, expected a URL like "smtp://host:25"',
    ),
    (
        MINIMAL + '[outgoing]\npassword_env = "PW"\n',
        "config.toml: [outgoing] username: missing (needed with password_env or password_file)",
    ),
    # time zone
    (
        '[helpdesk]\nsecret_key_file = "k"\ntimezone = "Mars/Olympus"\n' + MAILBOX,
        'config.toml: [helpdesk] timezone: "Mars/Olympus" is not a known time zone like "UTC" or "Europe/Berlin"',
    ),
    (
        '[helpdesk]\nsecret_key_file = "k"\ntimezone = "../etc/passwd"\n' + MAILBOX,
        'config.toml: [helpdesk] timezone: "../etc/passwd" is not a known time zone like "UTC" or "Europe/Berlin"',
    ),
    # quoting keeps the message on one line
    (
        MINIMAL + '[tickets]\nfirst_response = "4h\\nextra"\n',
        'config.toml: [tickets] first_response: "4h\\nextra" is not a duration like "30m", "4h", "48h" or "3d"',
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), ERRORS, ids=[e[1][13:70] for e in ERRORS]
)
def test_error_messages(text: str, expected: str) -> None:
    assert error(text) == expected
