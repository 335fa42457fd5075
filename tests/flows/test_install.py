"""Installing and starting: ``helpdesk init``, ``--version``, and templates checked before any mail.

The wheel itself (built, installed outside the checkout, one mail end to end) is
``.ci/wheel-smoke``'s; these run the same commands in-process, on the checkout.
"""

from __future__ import annotations

import email
import email.policy
import filecmp
import stat

import pytest

import helpdesk
from helpdesk.cli import main
from helpdesk.runtime import shipped
from tests.conftest import mail, write_config


def ingest(capsys, config, path):
    code = main(["--config", str(config), "ingest", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def sent(folder):
    new = folder / "mailboxes" / "outgoing" / "new"
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in sorted(new.iterdir())]


def with_own_templates(tmp_path, folder="own"):
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace('data_dir = "var"\n',
                                                 f'data_dir = "var"\ntemplates_dir = "{folder}"\n', 1))
    return config


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"helpdesk {helpdesk.__version__}\n"


def test_init_makes_a_ready_folder_that_takes_a_mail_end_to_end(tmp_path, capsys, monkeypatch):
    site = tmp_path / "site"
    assert main(["init", str(site)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"made {site / 'config.toml'}\n")
    assert f"cd {site} && helpdesk run" in out
    assert filecmp.cmp(site / "config.toml", shipped.config_toml(), shallow=False)
    for box in ("support", "disputes", "outgoing"):
        assert all((site / "mailboxes" / box / sub).is_dir() for sub in ("new", "cur", "tmp"))
    key = site / "var" / "secret.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_text().strip()) == 64

    (tmp_path / "m.eml").write_bytes(mail(subject="My key does not work"))
    monkeypatch.chdir(site)          # the shipped config's default: ./config.toml
    code, out, err = ingest(capsys, "config.toml", tmp_path / "m.eml")
    assert (code, err) == (0, "")
    assert out.startswith("ingested: 1 new tickets")
    acks = [m for m in sent(site) if m["To"].addresses[0].addr_spec == "bob@example.com"]
    assert len(acks) == 1 and "[T-1]" in acks[0]["Subject"]


def test_init_here_says_just_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["init"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("then: helpdesk run")
    assert (tmp_path / "config.toml").is_file()


def test_init_never_overwrites_a_config(tmp_path, capsys):
    (tmp_path / "config.toml").write_text("# mine\n")
    assert main(["init", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f"helpdesk: {tmp_path / 'config.toml'} exists already; not overwritten "
                   "(remove it first to start afresh)\n")
    assert (tmp_path / "config.toml").read_text() == "# mine\n"
    assert not (tmp_path / "mailboxes").exists()


def test_init_where_a_file_is_says_so_in_one_line(tmp_path, capsys):
    (tmp_path / "taken").write_text("a file")
    assert main(["init", str(tmp_path / "taken")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"helpdesk: cannot write {tmp_path / 'taken' / 'config.toml'}: ")
    assert err.count("\n") == 1


def test_a_broken_own_template_stops_ingest_before_the_mail_is_taken(tmp_path, capsys):
    """Not a quarantined customer mail: nothing is stored until the template is fixed."""
    config = with_own_templates(tmp_path)
    ack = tmp_path / "own" / "customer" / "ack.txt.j2"
    ack.parent.mkdir(parents=True)
    ack.write_text("Dear {{ recipient_name }},\nwe got it: {{ ticket.nmber }}\n")
    (tmp_path / "m.eml").write_bytes(mail())
    code, out, err = ingest(capsys, config, tmp_path / "m.eml")
    assert (code, out) == (1, "")
    assert err.startswith(f"helpdesk: template {ack}:2: UndefinedError: ") and err.count("\n") == 1

    ack.write_text("Dear {{ recipient_name }},\nwe got it: {{ ticket.id }}\n")
    code, out, err = ingest(capsys, config, tmp_path / "m.eml")
    assert (code, err) == (0, "")
    # the first try stored nothing: no duplicate now, and nothing was quarantined
    assert out.startswith("ingested: 1 new tickets, 0 threaded replies, 0 duplicates skipped, 0 dropped, "
                          "0 quarantined")
    [to_bob] = [m for m in sent(tmp_path) if "bob@example.com" in str(m["To"])]
    assert to_bob.get_body(("plain",)).get_content() == "Dear Bob Buyer,\nwe got it: T-1\n"


def test_own_templates_folder_must_exist(tmp_path, capsys):
    config = with_own_templates(tmp_path, folder="missing")
    assert main(["--config", str(config), "tickets"]) == 1
    assert capsys.readouterr().err == (f'helpdesk: {config}: [helpdesk] templates_dir: '
                                       f'"{tmp_path / "missing"}" does not exist\n')


def test_own_templates_folder_must_be_a_folder(tmp_path, capsys):
    config = with_own_templates(tmp_path, folder="a-file")
    (tmp_path / "a-file").write_text("not a folder")
    assert main(["--config", str(config), "tickets"]) == 1
    assert capsys.readouterr().err == (f'helpdesk: {config}: [helpdesk] templates_dir: '
                                       f'"{tmp_path / "a-file"}" is not a folder\n')


def test_the_checkout_uses_its_own_top_level_files():
    """Today's behaviour in a checkout: templates/ and config.toml at the top, edited in place."""
    top = shipped.folder()
    assert (top / "pyproject.toml").is_file()
    assert shipped.templates() == top / "templates" and shipped.config_toml() == top / "config.toml"
