"""The start-up check of every template, and a deployment's own folder overriding file by file."""

from __future__ import annotations

import shutil

import pytest

from helpdesk.config.loader import load_config
from helpdesk.errors import TemplateError
from helpdesk.outbound.notify import Renderer
from helpdesk.outbound.template_check import verify
from helpdesk.runtime import samples
from helpdesk.runtime.app import TEMPLATES
from tests.conftest import write_config


@pytest.fixture(scope="module")
def contexts(tmp_path_factory):   # what every check renders with, as runtime.app hands it
    return samples.contexts(load_config(write_config(tmp_path_factory.mktemp("config"))))


@pytest.fixture
def shipped(tmp_path):
    """A private copy of the shipped templates, free to break."""
    return shutil.copytree(TEMPLATES, tmp_path / "shipped")


@pytest.fixture
def own(tmp_path):
    folder = tmp_path / "own"
    (folder / "customer").mkdir(parents=True)
    return folder


def test_the_shipped_templates_pass_and_every_event_with_a_subject_has_a_sample(contexts):
    verify(Renderer(TEMPLATES), contexts)
    events = {(p.parent.name, p.name.removesuffix(".subject.j2")) for p in TEMPLATES.glob("*/*.subject.j2")}
    assert events == set(contexts)


def test_a_missing_template_names_it(shipped, contexts):
    (shipped / "customer" / "ack.subject.j2").unlink()
    with pytest.raises(TemplateError, match=r"^template customer/ack.subject.j2 is missing \(looked in .*shipped\)$"):
        verify(Renderer(shipped), contexts)


def test_a_missing_templates_folder_names_it(tmp_path, contexts):
    with pytest.raises(TemplateError, match="^templates folder .*nowhere does not exist$"):
        verify(Renderer(tmp_path / "nowhere"), contexts)


def test_a_syntax_error_names_the_file_and_line(shipped, own, contexts):
    (own / "customer" / "ack.txt.j2").write_text("Dear {{ recipient_name }},\n{% if %}\n")
    with pytest.raises(TemplateError) as caught:
        verify(Renderer([own, shipped]), contexts)
    assert str(caught.value).startswith(f"template {own / 'customer' / 'ack.txt.j2'}:2: ")


def test_an_unknown_variable_names_the_file_and_line(shipped, own, contexts):
    (own / "customer" / "ack.txt.j2").write_text("Dear {{ recipient_name }},\n\n{{ ticket.nmber }}\n")
    with pytest.raises(TemplateError) as caught:
        verify(Renderer([own, shipped]), contexts)
    message = str(caught.value)
    assert message.startswith(f"template {own / 'customer' / 'ack.txt.j2'}:3: UndefinedError: ")
    assert "nmber" in message and "\n" not in message


def test_an_unknown_variable_in_a_shipped_include_names_the_included_file(shipped, contexts):
    partial = shipped / "buyer" / "_dispute_files.txt.j2"
    partial.write_text("{{ no_such_variable }}\n" + partial.read_text())
    with pytest.raises(TemplateError, match=r"_dispute_files.txt.j2:1: UndefinedError: 'no_such_variable'"):
        verify(Renderer(shipped), contexts)


def test_an_override_wins_file_by_file_and_the_shipped_ones_fill_the_rest(shipped, own, contexts):
    (own / "customer" / "ack.txt.j2").write_text("Ours, for {{ ticket.id }}.\n")
    renderer = Renderer([own, shipped])
    verify(renderer, contexts)
    rendered = renderer.render("customer", "ack", contexts[("customer", "ack")])
    assert rendered.text == "Ours, for T-42.\n"
    attached = contexts[("customer", "ack")]["attachments"][0]["filename"]
    assert "T-42" in rendered.subject and attached in rendered.html   # shipped subject and HTML


def test_an_override_that_overrides_nothing_is_an_error_but_a_partial_is_not(shipped, own, contexts):
    (own / "customer" / "_footer.txt.j2").write_text("-- \nDifmark\n")
    verify(Renderer([own, shipped]), contexts)
    (own / "customer" / "akc.txt.j2").write_text("typo in the name\n")
    with pytest.raises(TemplateError, match=r"akc.txt.j2: overrides none of the shipped templates"):
        verify(Renderer([own, shipped]), contexts)


def test_a_file_broken_after_a_good_check_is_caught_by_the_next_one(shipped, own, contexts):
    """The check runs once per set of files; a changed file is a new set."""
    (own / "customer" / "closed.txt.j2").write_text("Closed: {{ ticket.id }}\n")
    verify(Renderer([own, shipped]), contexts)
    (own / "customer" / "closed.txt.j2").write_text("Closed: {{ ticket.idd }}\n")
    with pytest.raises(TemplateError, match="closed.txt.j2:1: UndefinedError"):
        verify(Renderer([own, shipped]), contexts)
