"""Cut quoted history and signatures out of a reply, keeping what the author wrote.

A reply body is read once, top to bottom, one line at a time. Each line is
either text the author wrote or one of these markers:

* a ``>`` quoted line: dropped, and reading goes on, so answers written
  between quoted blocks (interleaved replies) or after them (bottom-posting)
  are kept;
* a quote header: an attribution ("On <date>, <name> wrote:" in a dozen
  languages, also wrapped over two lines), an Outlook separator
  ("-----Original Message-----") or an Outlook header block ("From:/Sent:/To:/
  Subject:", localized, maybe under a rule such as "_____"). Chinese, Japanese
  and Korean clients write these too ("Bob <bob@x.com> 于2026年11月3日 上午10:00
  写道：", "发件人：/发送时间：", "差出人：/送信日時："), often with the
  full-width colon "：", which counts as ":" throughout. A header that
  introduces ``>`` quoted lines is only a label and is dropped with them. A
  header followed by unmarked text starts history nobody marked as quoted, so
  everything from it on is dropped. Outlook headers are always treated that
  way once the author has written something: Outlook quotes without ``>`` and
  the quoted message may itself begin with ``>`` lines;
* a signature: "-- ", "--" or a mobile sign-off ("Sent from my iPhone"). It and
  what follows are dropped, except a forwarded message found after it;
* a forwarded-message marker ("---------- Forwarded message ---------"): a
  forward is what the author sent, so it and everything after are kept as is.

If nothing is left, the message was all quote (or all signature) and the
original text is returned, trimmed: losing a message is worse than keeping a
quote.

Speed matters because this runs on every inbound mail: every pattern is
precompiled, anchored and bounded (``.{0,300}``, never nested quantifiers), and
the costlier ones only run on lines that cheap string tests let through (an
attribution ends with ":" or "：" and holds a digit). Reading stops at the first
unmarked history, which is usually most of a top-posted message.
"""

from __future__ import annotations

import re

__all__ = ["strip_reply"]

# Longest line (or two joined lines) that is tried as an attribution; real ones
# are well under this, and the bound keeps the regex work per line small.
_MAX_ATTRIBUTION = 400
_COLONS = (":", "：")

_ATTRIBUTION = re.compile(
    r"""(?:
        On\s.{1,300}\bwrote
      | Am\s.{1,300}\bschrieb\b.{0,200}
      | Le\s.{1,300}\ba\s+écrit
      | El\s.{1,300}\bescribió
      | Il\s.{1,300}\bha\s+scritto
      | Op\s.{1,300}\bschreef\b.{0,200}
      | Em\s.{1,300}\bescreveu
      | W\s+dniu\s.{1,300}\b(?:pisze|napisał(?:a|\(a\))?)
      | Den\s.{1,300}\bskrev\b.{0,200}
      | .{1,300}\bнаписал[аи]?
      | (?:пн|вт|ср|чт|пт|сб|вс),\s.{1,300}
      | .{0,300}<[^<>\s]{1,100}@[^<>\s]{1,100}>\)?
      | (?=.{0,300}?\d[:：]\d\d)(?:
            .{1,300}[于於]\s?\d.{0,200}[写寫]\s?道
          | 在\s?\d.{1,300}[写寫]\s?道
          | \d{4}\s?[年년/.\-].{1,300}(?:のメッセージ|のメール|書きました|(?:님이|>)\s?작성)
        )
    )\s?[:：]""",
    re.VERBOSE | re.IGNORECASE,
)
# Gmail in the other languages ends the attribution with "<address>:", so the
# address alternative catches those; it and every other one must also show a time.
# The Chinese, Japanese and Korean ones end with the verb ("写道", "寫道",
# "のメッセージ", "님이 작성"), so the text before it is free; they must hold a
# clock time (a year is prose: "鲁迅在1921年写道：") and start the way the
# clients start them: "<name> 于<date>", "在 <date>" or "<date>". That also keeps
# the tail of a wrapped one ("上午10:00写道：") from passing for a whole one.
_TIME = re.compile(r"\d{1,2}[:.h]\d{2}|\d{4}")

_SEPARATOR = re.compile(
    r"""-{3,}\s*(?:
        Original\s+Message | Ursprüngliche\s+Nachricht | Message\s+d'origine
      | Mensaje\s+original | Messaggio\s+originale | Oorspronkelijk\s+bericht
      | Mensagem\s+original | Ursprungligt\s+meddelande | Исходное\s+сообщение
      | Wiadomość\s+oryginalna | 原始邮件 | 原始郵件 | 元のメッセージ | 원본\s?메시지
    )\s*-{3,}""",
    re.VERBOSE | re.IGNORECASE,
)

_FORWARD = re.compile(
    r"""(?:-{3,}\s*(?:
        Forwarded\s+message | Weitergeleitete\s+Nachricht | Message\s+transféré
      | Mensaje\s+reenviado | Messaggio\s+inoltrato | Doorgestuurd\s+bericht
      | Mensagem\s+encaminhada | Пересылаемое\s+сообщение
      | Przekazana\s+wiadomość | Vidarebefordrat\s+meddelande
    )\s*-{3,}
    | Begin\s+forwarded\s+message\s?:)""",
    re.VERBOSE | re.IGNORECASE,
)

# "**From:**" and "*From:*" come from HTML-to-text converters.
_FROM = re.compile(
    r"""\*{0,2}(?:
        From|De|Von|Da|Van|От|Od|Från|Fra
      | 发件人|寄件者|寄件人|差出人|보낸\s?사람
    )\s?[:：]\*{0,2}\s*\S""",
    re.VERBOSE | re.IGNORECASE,
)
_FIELD = re.compile(
    r"""\*{0,2}(?:
        Sent|Date|To|Cc|Bcc|Subject|Reply-To
      | Envoyé|À|A|Objet
      | Gesendet|Datum|An|Betreff
      | Enviado\s+el|Enviado|Enviada|Fecha|Para|Asunto|Assunto|Data
      | Inviato|Oggetto
      | Verzonden|Aan|Onderwerp
      | Отправлено|Дата|Кому|Копия|Тема
      | Wysłano|Do|DW|Temat
      | Skickat|Till|Ämne|Kopia
      | 发送时间|发送日期|收件人|抄送|密送|主题
      | 寄件日期|收件者|副本|密件副本|主旨|主題
      | 送信日時|宛先|件名
      | 보낸\s?날짜|받는\s?사람|참조|숨은\s?참조|제목
    )\s?[:：]""",
    re.VERBOSE | re.IGNORECASE,
)
_FIELDS_NEEDED = 2
_HEADER_REACH = 12  # lines after "From:" searched for the other fields
_RULE_CHARS = frozenset("-_=*~")

_DEVICE = r"(?:iPhone|iPad|Android|BlackBerry|Samsung|Galaxy|smartphone|mobile)"
_SIGN_OFF = re.compile(
    rf"""(?:
        Sent\s+from\s+my\s+{_DEVICE}
      | Sent\s+from\s+(?:Outlook|Mail\s+for\s+Windows|Yahoo\s+Mail|Gmail)
      | Get\s+Outlook\s+for\s+(?:iOS|Android)
      | Envoyé\s+(?:de|depuis)\s+mon\s+{_DEVICE}
      | Von\s+meinem\s+{_DEVICE}\s+gesendet
      | Enviado\s+desde\s+mi\s+{_DEVICE}
      | Enviado\s+do\s+meu\s+{_DEVICE}
      | Inviato\s+da(?:l)?\s+(?:mio\s+)?{_DEVICE}
      | Verzonden\s+(?:met|vanaf)\s+mijn\s+{_DEVICE}
      | Skickat\s+från\s+min\s+{_DEVICE}
      | Wysłane\s+z\s+(?:mojego\s+)?{_DEVICE}
      | Отправлено\s+с\s+(?:моего\s+)?{_DEVICE}
    )\b\S*(?:\s+\S+){{0,3}}""",
    re.VERBOSE | re.IGNORECASE,
)
# A sign-off may name the model or add a link ("Sent from my iPhone 15 Pro",
# "Get Outlook for iOS<https://aka.ms/o0ukef>"), but a longer line is prose.
_MAX_SIGN_OFF = 100

_ATTRIBUTION_KIND = "attribution"
_OUTLOOK_KIND = "outlook"


def strip_reply(text: str, strict: bool = False) -> str:
    """Return only the new text the author wrote: quoted history and signature removed.

    When nothing new is left, a customer's mail keeps its whole text (better a
    quote too many than a lost message); ``strict`` returns "" instead, for
    staff replies, whose text is relayed to the customer.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    elif not isinstance(text, str):
        return ""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept = _trim(_author_lines(lines))
    if any(line.strip() for line in kept):
        return "\n".join(kept)
    return "" if strict else "\n".join(_trim(lines))


def _author_lines(lines: list[str]) -> list[str]:
    """Walk the lines once; the state is what we are inside (text or signature)."""
    kept: list[str] = []
    removed = False  # just dropped something: swallow the blank lines after it
    in_signature = False
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            if not in_signature and not (removed and (not kept or not kept[-1])):
                kept.append("")
            i += 1
            continue
        if stripped[0] == ">":
            i, removed = i + 1, True
            continue
        header = _quote_header(lines, i, stripped)
        if header is not None:
            end, kind = header
            if not _labels_quote(lines, end, kind, kept):
                break
            i, removed = end, True
            continue
        if _FORWARD.fullmatch(stripped):
            return kept + lines[i:]
        if in_signature or _is_signature(stripped):
            i, in_signature = i + 1, True
            continue
        kept.append(line)
        i, removed = i + 1, False
    return kept


def _labels_quote(lines: list[str], end: int, kind: str, kept: list[str]) -> bool:
    """A header followed by ``>`` lines is a label; Outlook's only before any text.

    Outlook quotes without ``>``, so ``>`` lines after its header usually belong
    to the quoted message itself, except when nothing precedes the header: then
    this is a bottom-posted reply and the author's text comes after them.
    """
    if kind == _OUTLOOK_KIND and any(line.strip() for line in kept):
        return False
    nxt = _next_nonblank(lines, end)
    return nxt is not None and lines[nxt].lstrip().startswith(">")


def _quote_header(lines: list[str], i: int, stripped: str) -> tuple[int, str] | None:
    """Where a quote header starting at line ``i`` ends, and which kind it is."""
    first = stripped[0]
    if first == "-" and _SEPARATOR.fullmatch(stripped):
        end = _outlook_block_end(lines, _next_nonblank(lines, i + 1))
        return (end or i + 1), _OUTLOOK_KIND
    if first in _RULE_CHARS and _is_rule(stripped):
        end = _outlook_block_end(lines, _next_nonblank(lines, i + 1))
        return (end, _OUTLOOK_KIND) if end else None
    end = _outlook_block_end(lines, i)
    if end:
        return end, _OUTLOOK_KIND
    end = _attribution_end(lines, i, stripped)
    return (end, _ATTRIBUTION_KIND) if end else None


def _attribution_end(lines: list[str], i: int, stripped: str) -> int | None:
    """Attribution lines end with ":"; clients wrap long ones onto a second line.

    A second line that is a whole attribution by itself is not a wrapped one:
    joining it would swallow the author's last line, which it happens to follow.
    """
    if stripped.endswith(_COLONS):
        return i + 1 if _is_attribution(stripped) else None
    following = lines[i + 1].strip() if i + 1 < len(lines) else ""
    wrapped = following.endswith(_COLONS) and not following.startswith(">")
    if wrapped and _is_attribution(stripped + " " + following):
        return None if _is_attribution(following) else i + 2
    return None


def _is_attribution(candidate: str) -> bool:
    """The time test is what tells "On 3 Nov, Bob wrote:" from prose ending in "wrote:"."""
    return (
        len(candidate) <= _MAX_ATTRIBUTION
        and _TIME.search(candidate) is not None
        and _ATTRIBUTION.fullmatch(candidate) is not None
    )


def _outlook_block_end(lines: list[str], i: int | None) -> int | None:
    """A "From:" line counts only with more header fields under it, so prose survives."""
    if i is None or i >= len(lines) or not _FROM.match(lines[i].strip()):
        return None
    fields, end = 0, None
    for j in range(i + 1, min(len(lines), i + 1 + _HEADER_REACH)):
        stripped = lines[j].strip()
        if not stripped:
            continue
        if not _FIELD.match(stripped):
            break
        fields, end = fields + 1, j + 1
    return end if fields >= _FIELDS_NEEDED else None


def _is_rule(stripped: str) -> bool:
    """Outlook draws "____" over its header block, HTML-to-text turns <hr> into "* * *"."""
    compact = stripped.replace(" ", "")
    return len(compact) >= 3 and set(compact) <= _RULE_CHARS


def _is_signature(stripped: str) -> bool:
    """ "-- " is the standard separator; mail clients also add their own sign-off."""
    if stripped == "--":
        return True
    return len(stripped) <= _MAX_SIGN_OFF and _SIGN_OFF.fullmatch(stripped) is not None


def _next_nonblank(lines: list[str], i: int) -> int | None:
    """Headers and what they introduce are often a blank line apart."""
    for j in range(i, len(lines)):
        if lines[j].strip():
            return j
    return None


def _trim(lines: list[str]) -> list[str]:
    """Blank lines at either end carry nothing; whitespace-only ones count as blank."""
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end]
