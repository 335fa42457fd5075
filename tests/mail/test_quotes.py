"""strip_reply on realistic replies from the mail clients customers use.

Messages are written out in full, as the clients produce them. "--\\x20" is the
signature separator "-- ": spelled that way so no editor strips the space.
"""

from __future__ import annotations

import random
import time

import pytest

from helpdesk.mail.quotes import strip_reply

NEW_TEXT = "Hi,\n\nthe download link still gives me a 404.\n\nThanks,\nAlice"

QUOTED_ANSWER = """\
> Hello Alice,
>
> please try the link in your order confirmation again.
>
> Best regards,
> Bob"""

# One attribution per client language, each followed by ">" quoting (Gmail,
# Thunderbird, Apple Mail); wrapped ones are split where Gmail wraps them.
ATTRIBUTIONS = [
    pytest.param("On Mon, 3 Nov 2026 at 10:00, Bob <bob@x.com> wrote:", id="english"),
    pytest.param(
        "On Mon, 3 Nov 2026 at 10:00, Bob Example <bob.example@example.com>\nwrote:",
        id="english-wrapped",
    ),
    pytest.param("On 11/3/26 10:00 AM, Bob wrote:", id="english-thunderbird"),
    pytest.param("Am 03.11.2026 um 10:00 schrieb Bob <bob@x.com>:", id="german"),
    pytest.param(
        "Am Mo., 3. Nov. 2026 um 10:00 Uhr schrieb Bob Example <\nbob@x.com>:",
        id="german-wrapped",
    ),
    pytest.param(
        "Le lun. 3 nov. 2026 à 10:00, Bob <bob@x.com> a écrit\xa0:", id="french"
    ),
    pytest.param(
        "Le lun. 3 nov. 2026 à 10:00, Bob Example <bob.example@example.com> a\nécrit :",
        id="french-wrapped",
    ),
    pytest.param(
        "El lun, 3 nov 2026 a las 10:00, Bob (<bob@x.com>) escribió:", id="spanish"
    ),
    pytest.param(
        "El lun, 3 nov 2026 a las 10:00, Bob Example (<bob.example@example.com>)\nescribió:",
        id="spanish-wrapped",
    ),
    pytest.param(
        "Il giorno lun 3 nov 2026 alle ore 10:00 Bob <bob@x.com> ha scritto:",
        id="italian",
    ),
    pytest.param("Op ma 3 nov. 2026 om 10:00 schreef Bob <bob@x.com>:", id="dutch"),
    pytest.param(
        "Em seg., 3 de nov. de 2026 às 10:00, Bob <bob@x.com> escreveu:",
        id="portuguese",
    ),
    pytest.param("пн, 3 нояб. 2026 г. в 10:00, Bob <bob@x.com>:", id="russian-gmail"),
    pytest.param("3 ноября 2026 г., в 10:00, Bob написал:", id="russian-wrote"),
    pytest.param("W dniu 3.11.2026 o 10:00 Bob <bob@x.com> pisze:", id="polish"),
    pytest.param("Den 3 nov. 2026 kl. 10:00 skrev Bob <bob@x.com>:", id="swedish"),
    pytest.param("2026年11月3日(月) 10:00 Bob <bob@x.com>:", id="other-gmail-locale"),
    pytest.param(
        "Bob <bob@x.com> 于2026年11月3日周一 上午10:00写道：", id="chinese-gmail"
    ),
    pytest.param(
        "Bob Example <bob.example@example.com> 于2026年11月3日周一\n上午10:00写道：",
        id="chinese-gmail-wrapped",
    ),
    pytest.param("在 2026年11月3日 10:00, Bob <bob@x.com> 写道:", id="chinese-zai"),
    pytest.param("在 2026/11/3 10:00, Bob 写道:", id="chinese-thunderbird"),
    pytest.param(
        "Bob <bob@x.com> 於 2026年11月3日 週一 上午10:00 寫道：",
        id="traditional-chinese-gmail",
    ),
    pytest.param(
        "Bob Example <bob.example@example.com> 於 2026年11月3日\n週一 上午10:00 寫道：",
        id="traditional-chinese-gmail-wrapped",
    ),
    pytest.param("2026年11月3日(月) 10:00 Bob <bob@x.com>：", id="japanese-full-width"),
    pytest.param(
        "2026年11月3日(月) 10:00 Bob <bob@x.com> のメッセージ:", id="japanese-message"
    ),
    pytest.param(
        "2026/11/03 10:00 に Bob さんは書きました:", id="japanese-thunderbird"
    ),
    pytest.param(
        "2026년 11월 3일 (월) 오전 10:00, Bob <bob@x.com>님이 작성:", id="korean-gmail"
    ),
    pytest.param(
        "2026년 11월 3일 (월)\n오전 10:00, Bob <bob@x.com>님이 작성:",
        id="korean-gmail-wrapped",
    ),
    pytest.param(
        "2026. 11. 3. 오전 10:00, Bob <bob@x.com> 작성:", id="korean-apple-mail"
    ),
]


@pytest.mark.parametrize("attribution", ATTRIBUTIONS)
def test_attribution_and_quote_are_removed(attribution):
    message = f"{NEW_TEXT}\n\n{attribution}\n{QUOTED_ANSWER}\n"
    assert strip_reply(message) == NEW_TEXT


@pytest.mark.parametrize("attribution", ATTRIBUTIONS)
def test_attribution_right_under_the_text_leaves_the_text(attribution):
    """No blank line between: the last line of text is not half an attribution."""
    message = f"{NEW_TEXT}\n{attribution}\n{QUOTED_ANSWER}\n"
    assert strip_reply(message) == NEW_TEXT


@pytest.mark.parametrize("attribution", ATTRIBUTIONS)
def test_attribution_cuts_unmarked_history(attribution):
    """HTML-to-text loses the ">" marks: everything from the attribution on goes."""
    unmarked = QUOTED_ANSWER.replace("> ", "").replace(">", "")
    message = f"{NEW_TEXT}\n\n{attribution}\n\n{unmarked}\n"
    assert strip_reply(message) == NEW_TEXT


OUTLOOK_HEADERS = [
    pytest.param(
        "-----Original Message-----\n"
        "From: Bob <bob@x.com>\n"
        "Sent: Monday, November 3, 2026 10:00 AM\n"
        "To: Alice <alice@y.com>\n"
        "Subject: RE: Order 1234",
        id="english-original-message",
    ),
    pytest.param(
        "-----Ursprüngliche Nachricht-----\n"
        "Von: Bob <bob@x.com>\n"
        "Gesendet: Montag, 3. November 2026 10:00\n"
        "An: Alice <alice@y.com>\n"
        "Betreff: AW: Bestellung 1234",
        id="german-original-message",
    ),
    pytest.param(
        "-----Message d'origine-----\n"
        "De : Bob <bob@x.com>\n"
        "Envoyé : lundi 3 novembre 2026 10:00\n"
        "À : Alice <alice@y.com>\n"
        "Objet : RE: Commande 1234",
        id="french-original-message",
    ),
    pytest.param(
        "-----Mensaje original-----\n"
        "De: Bob <bob@x.com>\n"
        "Enviado el: lunes, 3 de noviembre de 2026 10:00\n"
        "Para: Alice <alice@y.com>\n"
        "Asunto: RE: Pedido 1234",
        id="spanish-original-message",
    ),
    pytest.param(
        "________________________________\n"
        "From: Bob <bob@x.com>\n"
        "Sent: Monday, November 3, 2026 10:00 AM\n"
        "To: Alice <alice@y.com>\n"
        "Subject: RE: Order 1234",
        id="english-underscores",
    ),
    pytest.param(
        "From: Bob <bob@x.com>\n"
        "Sent: Monday, November 3, 2026 10:00 AM\n"
        "To: Alice <alice@y.com>\n"
        "Cc: Carol <carol@x.com>\n"
        "Subject: RE: Order 1234",
        id="english-header-block",
    ),
    pytest.param(
        "From: Bob <bob@x.com>\n"
        "Date: Monday, 3 November 2026 at 10:00\n"
        "To: Alice <alice@y.com>\n"
        "Subject: Re: Order 1234",
        id="outlook-mac-header-block",
    ),
    pytest.param(
        "________________________________\n"
        "De : Bob <bob@x.com>\n"
        "Envoyé : lundi 3 novembre 2026 10:00\n"
        "À : Alice <alice@y.com>\n"
        "Objet : RE: Commande 1234",
        id="french-header-block",
    ),
    pytest.param(
        "Von: Bob <bob@x.com>\n"
        "Gesendet: Montag, 3. November 2026 10:00\n"
        "An: Alice <alice@y.com>\n"
        "Betreff: AW: Bestellung 1234",
        id="german-header-block",
    ),
    pytest.param(
        "De: Bob <bob@x.com>\n"
        "Enviado el: lunes, 3 de noviembre de 2026 10:00\n"
        "Para: Alice <alice@y.com>\n"
        "Asunto: RE: Pedido 1234",
        id="spanish-header-block",
    ),
    pytest.param(
        "* * *\n\n"
        "**From:** Bob <bob@x.com>  \n"
        "**Sent:** Monday, November 3, 2026 10:00 AM  \n"
        "**To:** Alice <alice@y.com>  \n"
        "**Subject:** RE: Order 1234",
        id="html2text-header-block",
    ),
    pytest.param(
        "---------- Original message ----------\n"
        "From: Bob <bob@x.com>\n"
        "Date: Mon, 3 Nov 2026 at 10:00\n"
        "Subject: Order 1234\n"
        "To: <alice@y.com>",
        id="gmail-original-message",
    ),
    pytest.param(
        "________________________________\n"
        "发件人: Bob <bob@x.com>\n"
        "发送时间: 2026年11月3日 10:00\n"
        "收件人: Alice <alice@y.com>\n"
        "抄送: Carol <carol@x.com>\n"
        "主题: 回复: 订单 1234",
        id="chinese-header-block",
    ),
    pytest.param(
        "发件人：Bob <bob@x.com>\n"
        "发送时间：2026年11月3日 10:00\n"
        "收件人：Alice <alice@y.com>\n"
        "主题：回复: 订单 1234",
        id="chinese-header-block-full-width",
    ),
    pytest.param(
        "-----原始邮件-----\n"
        "发件人: Bob <bob@x.com>\n"
        "发送时间: 2026年11月3日 10:00\n"
        "收件人: Alice <alice@y.com>\n"
        "主题: 订单 1234",
        id="chinese-original-message",
    ),
    pytest.param(
        "------------------\xa0原始邮件\xa0------------------\n"
        '发件人: "Bob"<bob@x.com>;\n'
        "发送时间: 2026年11月3日(星期一) 上午10:00\n"
        '收件人: "Alice"<alice@y.com>;\n'
        "主题: 订单 1234",
        id="chinese-qq-mail",
    ),
    pytest.param(
        "________________________________\n"
        "寄件者: Bob <bob@x.com>\n"
        "寄件日期: 2026年11月3日 上午 10:00\n"
        "收件者: Alice <alice@y.com>\n"
        "副本: Carol <carol@x.com>\n"
        "主旨: 回覆: 訂單 1234",
        id="traditional-chinese-header-block",
    ),
    pytest.param(
        "-----原始郵件-----\n"
        "寄件者：Bob <bob@x.com>\n"
        "寄件日期：2026年11月3日 上午 10:00\n"
        "收件者：Alice <alice@y.com>\n"
        "主旨：訂單 1234",
        id="traditional-chinese-original-message",
    ),
    pytest.param(
        "________________________________\n"
        "差出人: Bob <bob@x.com>\n"
        "送信日時: 2026年11月3日 10:00\n"
        "宛先: Alice <alice@y.com>\n"
        "CC: Carol <carol@x.com>\n"
        "件名: RE: 注文 1234",
        id="japanese-header-block",
    ),
    pytest.param(
        "-----Original Message-----\n"
        "差出人：Bob <bob@x.com>\n"
        "送信日時：2026年11月3日 10:00\n"
        "宛先：Alice <alice@y.com>\n"
        "件名：注文 1234",
        id="japanese-original-message",
    ),
    pytest.param(
        "-----元のメッセージ-----\n"
        "差出人: Bob <bob@x.com>\n"
        "送信日時: 2026年11月3日 10:00\n"
        "宛先: Alice <alice@y.com>\n"
        "件名: 注文 1234",
        id="japanese-original-message-localized",
    ),
    pytest.param(
        "-----원본 메시지-----\n"
        "보낸 사람: Bob <bob@x.com>\n"
        "보낸 날짜: 2026년 11월 3일 월요일 오전 10:00\n"
        "받는 사람: Alice <alice@y.com>\n"
        "제목: RE: 주문 1234",
        id="korean-original-message",
    ),
]

# Outlook does not mark the quoted message: it is plain text under the header,
# and may start with ">" lines of its own (Bob bottom-posted).
OUTLOOK_BODY = """\
> Does the link work for you?

Hello Alice,

please try the link in your order confirmation again.

Best regards,
Bob
"""


@pytest.mark.parametrize("header", OUTLOOK_HEADERS)
def test_outlook_header_and_everything_after_are_removed(header):
    message = f"{NEW_TEXT}\n\n{header}\n\n{OUTLOOK_BODY}"
    assert strip_reply(message) == NEW_TEXT


# Replies written in Chinese, Japanese and Korean, quoting the way their clients
# do: Gmail with ">" under its attribution, Outlook plain under its header block.
CJK_REPLIES = [
    pytest.param(
        "你好，\n"
        "\n"
        "下载链接还是打不开，显示 404。\n"
        "\n"
        "谢谢！\n"
        "王芳\n"
        "\n"
        "Bob <bob@x.com> 于2026年11月3日周一 上午10:00写道：\n"
        "\n"
        "> 王女士您好，\n"
        ">\n"
        "> 请再试一次订单确认邮件里的链接。\n"
        ">\n"
        "> Bob\n",
        "你好，\n\n下载链接还是打不开，显示 404。\n\n谢谢！\n王芳",
        id="chinese-gmail",
    ),
    pytest.param(
        "链接可以用了，谢谢！\n"
        "\n"
        "在 2026年11月3日 10:00, Bob <bob@x.com> 写道:\n"
        "\n"
        "王女士您好，\n"
        "请再试一次订单确认邮件里的链接。\n",
        "链接可以用了，谢谢！",
        id="chinese-zai-unmarked",
    ),
    pytest.param(
        "您好，\n"
        "\n"
        "我已經試過了，還是不行。\n"
        "\n"
        "Bob <bob@x.com> 於 2026年11月3日 週一 上午10:00 寫道：\n"
        "> 請再試一次。\n",
        "您好，\n\n我已經試過了，還是不行。",
        id="traditional-chinese-gmail",
    ),
    pytest.param(
        "お世話になっております。\n"
        "\n"
        "リンクはまだ開けません。\n"
        "\n"
        "2026年11月3日(月) 10:00 Bob <bob@x.com>:\n"
        "\n"
        "> 山田様\n"
        "> もう一度お試しください。\n",
        "お世話になっております。\n\nリンクはまだ開けません。",
        id="japanese-gmail",
    ),
    pytest.param(
        "ありがとうございます。解決しました。\n"
        "\n"
        "2026年11月3日(月) 10:00 Bob <bob@x.com> のメッセージ:\n"
        "> もう一度お試しください。\n",
        "ありがとうございます。解決しました。",
        id="japanese-message",
    ),
    pytest.param(
        "안녕하세요,\n"
        "\n"
        "링크가 여전히 열리지 않습니다.\n"
        "\n"
        "2026년 11월 3일 (월) 오전 10:00, Bob <bob@x.com>님이 작성:\n"
        "\n"
        "> 다시 시도해 주세요.\n",
        "안녕하세요,\n\n링크가 여전히 열리지 않습니다.",
        id="korean-gmail",
    ),
    pytest.param(
        "你好，\n"
        "\n"
        "附件是发票，请查收。\n"
        "\n"
        "王芳\n"
        "\n"
        "________________________________\n"
        "发件人： Bob <bob@x.com>\n"
        "发送时间： 2026年11月3日 10:00\n"
        "收件人： 王芳 <wang@y.com>\n"
        "主题： 订单 1234\n"
        "\n"
        "王女士您好，\n"
        "\n"
        "请把发票发给我们。\n",
        "你好，\n\n附件是发票，请查收。\n\n王芳",
        id="chinese-outlook",
    ),
    pytest.param(
        "收到，谢谢。\n"
        "\n"
        "------------------\xa0原始邮件\xa0------------------\n"
        '发件人: "Bob"<bob@x.com>;\n'
        "发送时间: 2026年11月3日(星期一) 上午10:00\n"
        '收件人: "王芳"<wang@y.com>;\n'
        "主题: 订单 1234\n"
        "\n"
        "请把发票发给我们。\n",
        "收到，谢谢。",
        id="chinese-qq-mail",
    ),
    pytest.param(
        "您好，\n"
        "\n"
        "發票在附件中。\n"
        "\n"
        "-----原始郵件-----\n"
        "寄件者: Bob <bob@x.com>\n"
        "寄件日期: 2026年11月3日 上午 10:00\n"
        "收件者: 陳小姐 <chen@y.com>\n"
        "主旨: 訂單 1234\n"
        "\n"
        "請把發票寄給我們。\n",
        "您好，\n\n發票在附件中。",
        id="traditional-chinese-outlook",
    ),
    pytest.param(
        "お世話になっております。\n"
        "\n"
        "請求書を添付いたします。\n"
        "\n"
        "山田\n"
        "\n"
        "-----元のメッセージ-----\n"
        "差出人：Bob <bob@x.com>\n"
        "送信日時：2026年11月3日 10:00\n"
        "宛先：山田 <yamada@y.com>\n"
        "件名：注文 1234\n"
        "\n"
        "> 先日の件について\n"
        "請求書をお送りください。\n",
        "お世話になっております。\n\n請求書を添付いたします。\n\n山田",
        id="japanese-outlook",
    ),
]


@pytest.mark.parametrize(("message", "expected"), CJK_REPLIES)
def test_chinese_japanese_korean_replies(message, expected):
    assert strip_reply(message) == expected


def test_quote_marks_of_any_depth_are_removed():
    message = (
        "Works now, thank you!\n"
        "\n"
        "> Try again please.\n"
        "> > It still fails.\n"
        ">> > > Does it work?\n"
        ">No spaces after this mark\n"
        "   > indented by an HTML converter\n"
    )
    assert strip_reply(message) == "Works now, thank you!"


def test_interleaved_answers_are_kept():
    message = """\
On Mon, 3 Nov 2026 at 10:00, Bob <bob@x.com> wrote:
> Which browser do you use?

Firefox 140.

> And which order number?
> It is in the confirmation mail.

Order 1234.
Bought last week.

>
> Bob

--\x20
Alice Example
"""
    assert strip_reply(message) == "Firefox 140.\n\nOrder 1234.\nBought last week."


def test_interleaved_answers_under_a_top_note_are_kept():
    message = """\
Hi Bob, answers inline.

On Mon, 3 Nov 2026 at 10:00, Bob <bob@x.com> wrote:
> Which browser do you use?
Firefox 140.
> And which order number?
Order 1234.
"""
    expected = "Hi Bob, answers inline.\n\nFirefox 140.\nOrder 1234."
    assert strip_reply(message) == expected


@pytest.mark.parametrize(
    "separator", ["--\x20", "--"], ids=["dash-dash-space", "dash-dash"]
)
def test_signature_is_removed(separator):
    message = f"{NEW_TEXT}\n\n{separator}\nAlice Example\nACME Ltd. | +1 555 0100\n"
    assert strip_reply(message) == NEW_TEXT


def test_signature_before_quote_is_removed_with_it():
    message = f"""\
{NEW_TEXT}
--\x20
Alice Example

On Mon, 3 Nov 2026 at 10:00, Bob <bob@x.com> wrote:
{QUOTED_ANSWER}
"""
    assert strip_reply(message) == NEW_TEXT


def test_message_that_is_only_a_signature_is_kept():
    message = "--\x20\nAlice Example\nACME Ltd.\n"
    assert strip_reply(message) == "--\x20\nAlice Example\nACME Ltd."


SIGN_OFFS = [
    "Sent from my iPhone",
    "Sent from my iPad",
    "Sent from my Android",
    "Sent from my Samsung Galaxy smartphone.",
    "Sent from Outlook for iOS",
    "Sent from Outlook for Android",
    "Get Outlook for iOS",
    "Get Outlook for Android<https://aka.ms/AAb9ysg>",
    "Sent from Mail for Windows",
    "Sent from Mail for Windows 10",
    "Envoyé de mon iPhone",
    "Von meinem iPhone gesendet",
    "Enviado desde mi iPhone",
    "Sent from Yahoo Mail on Android",
    "Sent from Yahoo Mail for iPhone",
]


@pytest.mark.parametrize("sign_off", SIGN_OFFS)
def test_mobile_sign_off_is_removed(sign_off):
    message = f"""\
{NEW_TEXT}

{sign_off}

On Mon, 3 Nov 2026 at 10:00, Bob <bob@x.com> wrote:
{QUOTED_ANSWER}
"""
    assert strip_reply(message) == NEW_TEXT


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(
            f"On Mon, 3 Nov 2026 at 10:00, Bob <bob@x.com> wrote:\n{QUOTED_ANSWER}\n",
            id="attribution-and-quote",
        ),
        pytest.param(f"{QUOTED_ANSWER}\n", id="quote-marks-only"),
        pytest.param(
            "-----Original Message-----\n"
            "From: Bob <bob@x.com>\n"
            "Sent: Monday, November 3, 2026 10:00 AM\n"
            "To: Alice <alice@y.com>\n"
            "Subject: RE: Order 1234\n"
            "\n"
            "Please try again.\n",
            id="outlook-quote-only",
        ),
    ],
)
def test_message_that_is_only_a_quote_is_returned_trimmed(message):
    assert strip_reply("\n\n" + message + "\n\n") == message.rstrip("\n")


def test_bottom_posted_reply_keeps_text_after_quote():
    message = f"""\
On Mon, 3 Nov 2026 at 10:00, Bob <bob@x.com> wrote:
{QUOTED_ANSWER}

{NEW_TEXT}

Sent from my iPhone
"""
    assert strip_reply(message) == NEW_TEXT


def test_bottom_posted_under_outlook_header_keeps_text_after_quote():
    """Outlook's "prefix each line" option: header, then ">" lines, then the answer."""
    message = f"""\
-----Original Message-----
From: Bob <bob@x.com>
Sent: Monday, November 3, 2026 10:00 AM
To: Alice <alice@y.com>
Subject: RE: Order 1234

{QUOTED_ANSWER}

{NEW_TEXT}
"""
    assert strip_reply(message) == NEW_TEXT


def test_crlf_and_cr_line_endings_are_normalised():
    message = (
        f"{NEW_TEXT}\n\n"
        "On Mon, 3 Nov 2026 at 10:00, Bob <bob@x.com> wrote:\n"
        f"{QUOTED_ANSWER}\n"
    )
    assert strip_reply(message.replace("\n", "\r\n")) == NEW_TEXT
    assert strip_reply(message.replace("\n", "\r")) == NEW_TEXT


def test_crlf_with_signature_separator():
    message = "Thanks!\r\n--\x20\r\nAlice\r\n"
    assert strip_reply(message) == "Thanks!"


@pytest.mark.parametrize("message", ["", "\n", "  \r\n\t\n\xa0\n"])
def test_empty_input_gives_empty_output(message):
    assert strip_reply(message) == ""


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(
            "I checked the logs.\n"
            "From: the second attempt on, the download fails.\n"
            "To be honest I have no idea why.\n"
            "Could you have a look?",
            id="from-in-prose",
        ),
        pytest.param(
            "On Monday I wrote to you about order 1234.\nNobody answered since then.",
            id="on-without-wrote",
        ),
        pytest.param(
            "Thanks for the reply.\n"
            "On the forum somebody wrote:\n"
            "\n"
            "use the mirror link instead.\n"
            "Does that work for me too?",
            id="on-wrote-without-date",
        ),
        pytest.param(
            "Hi,\n\nmy booking for order 1234:\n"
            "From: Berlin\n"
            "To: Paris\n"
            "\n"
            "The ticket PDF is empty.",
            id="from-to-in-prose",
        ),
        pytest.param(
            "My colleague wrote:\n"
            "\n"
            "the file is corrupt after unpacking.\n"
            "Can you check it?",
            id="wrote-without-date",
        ),
        pytest.param(
            "I sent it from my iPhone yesterday.\n"
            "Sent from my iPhone is what the footer says.",
            id="sign-off-words-in-prose",
        ),
        pytest.param(
            "Steps:\n---\n1. open the app\n2. tap download\n-> it fails with 404",
            id="rules-and-arrows",
        ),
        pytest.param(
            "您好，\n"
            "\n"
            "我上周发的邮件主题是“退款申请”，一直没有收到回复。\n"
            "发件人显示的是我的公司邮箱：wang@y.com。\n"
            "主题: 和发件人: 两栏都填好了。\n"
            "请帮忙查一下。",
            id="chinese-header-words-in-prose",
        ),
        pytest.param(
            "请按下面的信息开发票：\n"
            "发件人：王芳 <wang@y.com>\n"
            "主题：订单 1234 的发票\n"
            "\n"
            "谢谢。",
            id="chinese-from-subject-lines",
        ),
        pytest.param(
            "鲁迅在1921年写道：\n"
            "\n"
            "希望本是无所谓有，无所谓无的。\n"
            "我们对退款也还有希望。",
            id="chinese-wrote-without-time",
        ),
        pytest.param(
            "件名に注文番号を書きました:\n"
            "\n"
            "差出人のアドレスは yamada@y.com です。\n"
            "よろしくお願いします。",
            id="japanese-header-words-in-prose",
        ),
    ],
)
def test_legitimate_text_survives(message):
    assert strip_reply(message) == message


FORWARDED = """\
FYI, this customer cannot download either.

---------- Forwarded message ---------
From: Carol <carol@z.com>
Date: Mon, 3 Nov 2026 at 10:00
Subject: Broken download
To: <support@x.com>

The link gives a 404.

On Sun, 2 Nov 2026 at 09:00, Shop <shop@x.com> wrote:
> Your download is ready."""


def test_forwarded_message_is_kept():
    assert strip_reply(FORWARDED + "\n") == FORWARDED


def test_forwarded_message_after_signature_is_kept():
    message = FORWARDED.replace(
        "either.\n", "either.\n\n--\x20\nAlice Example\nSupport team\n"
    )
    assert strip_reply(message) == FORWARDED


def test_forwarded_message_inside_quote_is_removed():
    message = f"""\
{NEW_TEXT}

On Mon, 3 Nov 2026 at 10:00, Bob <bob@x.com> wrote:
> ---------- Forwarded message ---------
> From: Carol <carol@z.com>
> The link gives a 404.
"""
    assert strip_reply(message) == NEW_TEXT


def test_html_converted_reply_is_cut_at_attribution():
    """What inscriptis makes of a Gmail reply: indentation instead of ">"."""
    message = (
        "  Thanks, that worked.\n\n"
        "    On Mon, 3 Nov 2026 at 10:00, Bob <bob@x.com> wrote:\n"
        "    Please reboot.\n"
        "  From: Bob <bob@x.com>\n"
        "  Sent: Monday, November 3, 2026 10:00 AM\n"
        "  To: Support\n"
        "  Subject: RE: x\n"
        "  old"
    )
    assert strip_reply(message) == "  Thanks, that worked."


MARKERS = [
    "> quoted",
    ">",
    "On Mon, 3 Nov 2026 at 10:00, Bob <bob@x.com> wrote:",
    "On Mon, 3 Nov 2026 at 10:00, Bob <",
    "bob@x.com> wrote:",
    "-----Original Message-----",
    "________________________________",
    "From: Bob <bob@x.com>",
    "Sent: Monday",
    "To: Alice",
    "Subject: x",
    "---------- Forwarded message ---------",
    "--\x20",
    "--",
    "Sent from my iPhone",
    "",
    "   ",
    "plain text",
    "\r",
    "\x00\ufeff\u2028",
]


def test_never_raises_on_any_mix_of_markers():
    rng = random.Random(20261103)
    for _ in range(3000):
        lines = rng.choices(MARKERS, k=rng.randint(0, 12))
        result = strip_reply("\n".join(lines))
        assert isinstance(result, str)
        assert "\r" not in result


@pytest.mark.parametrize("value", [None, 42, b"Thanks!\n> quoted"])
def test_non_text_input_does_not_raise(value):
    assert strip_reply(value) in ("", "Thanks!")


@pytest.mark.parametrize(
    "message",
    [
        pytest.param("On " + "x " * 200_000 + "10:00 wrote:", id="long-attribution"),
        pytest.param(("On 3 Nov 2026 " * 20 + "\n") * 5_000 + ":", id="wrapped"),
        pytest.param("Am 10:00 " + "schrieb " * 40 + "x" * 150, id="many-keywords"),
        pytest.param("From: x\n" + "To: y\n" * 50_000, id="header-flood"),
        pytest.param("<" * 50_000 + "@" * 50_000 + "> 10:00:", id="address-flood"),
        pytest.param(
            ("于1 " * 130 + "10:00写道\n") * 2_000 + "：", id="cjk-attribution-flood"
        ),
        pytest.param("发件人：x\n" + "主题：y\n" * 50_000, id="cjk-header-flood"),
    ],
)
def test_pathological_input_is_fast(message):
    started = time.perf_counter()
    strip_reply(message)
    assert time.perf_counter() - started < 1.0
