"""Realistic inbound support mail, generated deterministically, for benchmarks.

``generate(n, seed)`` returns ``n`` raw RFC 5322 messages, as ``(name, bytes)``
pairs, all sent to support@shop.example by a few thousand customers (some of
them write several times) of a digital-goods shop, in English, German, French,
Russian, Japanese and Chinese:

* structure: text/plain, HTML only, multipart/alternative, multipart/mixed
  with 1-3 attachments (PDF or PNG look-alikes of random bytes, 2-60 KB,
  base64, some with non-ASCII names in RFC 2231 or RFC 2047 form) and
  multipart/related with an inline image;
* charsets: UTF-8 and US-ASCII, and ISO-8859-1, windows-1252, KOI8-R,
  Shift_JIS and GB2312 for the customers whose mail client uses them, with
  RFC 2047 subjects and display names (B and Q encoding) in the same charset;
  a few subjects in raw 8-bit UTF-8, as some servers pass them;
* bodies in quoted-printable, base64, 8bit or 7bit; LF or CRLF line endings;
* about a quarter are replies to an earlier message of the set, with
  In-Reply-To and References (the whole chain) pointing to the parent's
  Message-ID, a "Re:" (or "RE:", "AW:") subject and the parent's text quoted
  the way Gmail, Outlook, Apple Mail or Thunderbird quote it (also in HTML);
* headers as real clients and receiving servers write them (Received,
  DKIM-Signature, client-specific X- headers, Message-ID formats).

The list is shuffled, so some replies come before their parents. The names are
``msg-000000.eml``... in list order, so sorting the names keeps the order.

``generate_with_threads(n, seed)`` also returns ``parent_of`` (reply name ->
parent name); ``generate_corpus(n, seed)`` returns a ``Corpus`` that adds the
Message-ID and a description of each message. The same ``(n, seed)`` always
gives the same bytes. ``python benchmarks/mailgen.py [-n N] [--seed S]
[--write DIR]`` prints the mix (and writes the files).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import quopri
import random
import textwrap
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

SUPPORT = "support@shop.example"
SUPPORT_DISPLAY = "Difmark Support"
REPLY_SHARE = 0.25

__all__ = ["Corpus", "generate", "generate_corpus", "generate_with_threads", "thread_roots",
           "write_eml"]


# --------------------------------------------------------------------------- content

PRODUCTS = ("Elden Ring", "Microsoft Office 2021 Professional Plus", "Windows 11 Pro",
            "Cyberpunk 2077", "Adobe Photoshop 2026", "Steam Gift Card 50 EUR",
            "Kaspersky Total Security", "EA SPORTS FC 26", "Norton 360 Deluxe",
            "Minecraft Java Edition", "Baldur's Gate 3", "Xbox Game Pass Ultimate 3 Months")
ERRORS = ("0xC004F074", "E-1042", "INVALID_KEY", "0x8007007B", "CD-KEY ALREADY USED", "403")

LANGS = {
    "en": {
        "greet": ("Hello,", "Hi,", "Hi there,", "Dear Support Team,", "Good morning,"),
        "bye": ("Thanks,", "Best regards,", "Kind regards,", "Cheers,", "Thank you in advance,"),
        "say": (
            "I bought a license key for {product} yesterday but the activation fails with error {code}.",
            "The download link in my order confirmation says it has expired.",
            "Could you please send me an invoice with my company's VAT number on it?",
            "I was charged twice for order {order}, please check.",
            "The key I received for {product} is already in use on another account.",
            "I would like a refund, the game does not start on my PC at all.",
            "My order {order} still shows as pending after two days.",
            "I paid {price} € for it and I expected it to work right away.",
            "The product page said it was a global key, but it is region locked.",
            "I attached a screenshot of the error message.",
            "The payment went through with PayPal but I did not get the key.",
            "I have reinstalled the launcher twice, nothing changed.",
            "Can you tell me when the pre-order for {product} will be delivered?",
            "Is it possible to change the e-mail address on my account?",
            "My key is {key}, maybe it was typed wrong on your side?",
            "I'm not sure what to do next, the support page didn't help.",
        ),
        "again": (
            "Any update on this?", "I still have the same problem.",
            "Here is the additional information you asked for.",
            "Sorry, I forgot to mention the order number: {order}.",
            "It works now, thank you!", "The new key does not work either.",
            "I tried what you suggested but the error {code} is still there.",
            "Please reply, it has been three days.",
            "Just to add: I'm on Windows 11, the latest updates are installed.",
        ),
        "subject": ("Key does not work", "Activation error {code}", "Refund request for order {order}",
                    "Download link expired", "Invoice needed", "Charged twice!!",
                    "Where is my key?", "Question about {product}", "Problem with order {order}",
                    "Pre-order {product}", "Account e-mail change"),
        "first": ("James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda",
                  "David", "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph",
                  "Jessica", "Thomas", "Sarah", "Chris", "Karen", "Daniel", "Emily", "Matthew",
                  "Olivia", "Ethan", "Sophia", "Liam", "Emma", "Noah", "Ava"),
        "last": ("Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
                 "Wilson", "Anderson", "Taylor", "O'Brien", "Moore", "Martin", "Jackson",
                 "Thompson", "White", "Harris", "Clark", "Lewis", "Walker", "Young", "Allen",
                 "King", "Wright", "Scott", "Green", "Baker", "Adams", "Nelson"),
        "domains": ("gmail.com", "gmail.com", "outlook.com", "hotmail.com", "yahoo.com",
                    "icloud.com", "proton.me", "comcast.net", "acme-corp.com", "northwind.io"),
        "legacy": ("windows-1252",), "legacy_share": 0.15, "tz": (0, -5, -8, -6, 0),
    },
    "de": {
        "greet": ("Hallo,", "Sehr geehrte Damen und Herren,", "Guten Tag,", "Moin,"),
        "bye": ("Viele Grüße", "Mit freundlichen Grüßen", "Danke und Gruß", "MfG"),
        "say": (
            "Ich habe gestern einen Lizenzschlüssel für {product} gekauft, aber die Aktivierung schlägt mit Fehler {code} fehl.",
            "Der Download-Link in meiner Bestellbestätigung ist abgelaufen.",
            "Könnten Sie mir bitte eine Rechnung mit unserer Umsatzsteuer-ID schicken?",
            "Mir wurde die Bestellung {order} zweimal berechnet.",
            "Der Schlüssel für {product} wird bereits auf einem anderen Konto verwendet.",
            "Ich möchte mein Geld zurück, das Spiel startet überhaupt nicht.",
            "Meine Bestellung {order} steht seit zwei Tagen auf ausstehend.",
            "Ich habe {price} € bezahlt und erwarte, dass das sofort funktioniert.",
            "Anbei ein Screenshot der Fehlermeldung.",
            "Die Zahlung über PayPal ist durch, aber ich habe keinen Schlüssel erhalten.",
            "Laut Produktseite ist der Key weltweit gültig, er ist aber regionsgesperrt.",
            "Können Sie mir sagen, wann die Vorbestellung ausgeliefert wird?",
        ),
        "again": ("Gibt es schon Neuigkeiten?", "Das Problem besteht weiterhin.",
                  "Hier die gewünschten zusätzlichen Informationen.",
                  "Entschuldigung, die Bestellnummer ist {order}.",
                  "Es funktioniert jetzt, vielen Dank!", "Der neue Schlüssel geht auch nicht.",
                  "Ich warte seit drei Tagen auf eine Antwort."),
        "subject": ("Schlüssel funktioniert nicht", "Aktivierungsfehler {code}",
                    "Rückerstattung Bestellung {order}", "Download-Link abgelaufen",
                    "Rechnung benötigt", "Doppelte Abbuchung", "Frage zu {product}"),
        "first": ("Lukas", "Anna", "Jürgen", "Sabine", "Felix", "Jörg", "Katrin", "Björn", "Lena",
                  "Max", "Sophie", "Uwe", "Günter", "Petra", "Maximilian"),
        "last": ("Müller", "Schmidt", "Schneider", "Fischer", "Weiß", "Meyer", "Wagner", "Becker",
                 "Schäfer", "Koch", "Hoffmann", "Schröder", "Krüger", "Köhler", "Braun"),
        "domains": ("gmx.de", "web.de", "t-online.de", "gmail.com", "outlook.de", "posteo.de"),
        "legacy": ("iso-8859-1", "windows-1252"), "legacy_share": 0.5, "tz": (1,),
    },
    "fr": {
        "greet": ("Bonjour,", "Madame, Monsieur,", "Bonsoir,"),
        "bye": ("Cordialement", "Bien à vous", "Merci d'avance", "Bonne journée"),
        "say": (
            "J'ai acheté hier une clé de licence pour {product}, mais l'activation échoue avec l'erreur {code}.",
            "Le lien de téléchargement dans ma confirmation de commande a expiré.",
            "Pourriez-vous m'envoyer une facture avec notre numéro de TVA ?",
            "J'ai été débité deux fois pour la commande {order}.",
            "La clé pour {product} est déjà utilisée sur un autre compte.",
            "Je souhaite être remboursé, le jeu ne se lance pas du tout.",
            "Ma commande {order} est toujours en attente depuis deux jours.",
            "J'ai payé {price} € et ça ne marche pas.",
            "Vous trouverez ci-joint une capture d'écran de l'erreur.",
            "Le paiement PayPal est passé mais je n'ai reçu aucune clé.",
            "Pouvez-vous me dire quand la précommande sera livrée ?",
        ),
        "again": ("Avez-vous des nouvelles ?", "J'ai toujours le même problème.",
                  "Voici les informations complémentaires demandées.",
                  "Désolé, j'ai oublié le numéro de commande : {order}.",
                  "Ça marche maintenant, merci beaucoup !", "La nouvelle clé ne fonctionne pas non plus.",
                  "J'attends toujours une réponse, cela fait trois jours."),
        "subject": ("Clé ne fonctionne pas", "Erreur d'activation {code}",
                    "Demande de remboursement commande {order}", "Lien de téléchargement expiré",
                    "Besoin d'une facture", "Débité deux fois", "Question sur {product}"),
        "first": ("Léa", "Hugo", "Chloé", "Théo", "Camille", "Jérôme", "Inès", "Mathéo", "Zoé",
                  "François", "Hélène", "Noël", "Amélie", "René", "Céline"),
        "last": ("Martin", "Bernard", "Dubois", "Lefèvre", "Moreau", "Girard", "Fontaine", "Mercier",
                 "Lefebvre", "Faure", "André", "Rousseau", "Blanc", "Guérin", "Boyer"),
        "domains": ("orange.fr", "free.fr", "laposte.net", "gmail.com", "outlook.fr", "sfr.fr"),
        "legacy": ("iso-8859-1", "windows-1252"), "legacy_share": 0.5, "tz": (1,),
    },
    "ru": {
        "greet": ("Здравствуйте!", "Добрый день,", "Привет,"),
        "bye": ("С уважением,", "Спасибо,", "Заранее спасибо,"),
        "say": (
            "Вчера я купил ключ для {product}, но активация не проходит, ошибка {code}.",
            "Ссылка для скачивания в письме с подтверждением заказа устарела.",
            "Пришлите, пожалуйста, счёт с реквизитами нашей компании.",
            "С меня дважды списали деньги за заказ {order}.",
            "Ключ для {product} уже используется на другом аккаунте.",
            "Хочу вернуть деньги, игра вообще не запускается.",
            "Заказ {order} уже два дня в статусе ожидания.",
            "Прикладываю скриншот ошибки.",
            "Оплата через PayPal прошла, но ключ я так и не получил.",
            "Подскажите, когда будет доставлен предзаказ?",
        ),
        "again": ("Есть новости?", "Проблема всё ещё не решена.", "Вот дополнительная информация.",
                  "Извините, забыл номер заказа: {order}.", "Всё заработало, спасибо!",
                  "Новый ключ тоже не работает.", "Жду ответа уже три дня."),
        "subject": ("Ключ не работает", "Ошибка активации {code}", "Возврат денег за заказ {order}",
                    "Ссылка для скачивания устарела", "Нужен счёт", "Двойное списание",
                    "Вопрос по {product}"),
        "first": ("Алексей", "Дмитрий", "Сергей", "Иван", "Андрей", "Михаил", "Артём", "Павел",
                  "Мария", "Анна", "Ольга", "Наталья", "Елена", "Татьяна", "Юлия"),
        "last": ("Иванов", "Смирнов", "Кузнецов", "Попов", "Васильев", "Петров", "Соколов",
                 "Михайлов", "Новиков", "Фёдоров", "Морозов", "Волков", "Алексеев", "Лебедев",
                 "Семёнов"),
        "handles": ("alex", "dima", "serg", "ivan", "andrey", "misha", "artem", "pasha", "masha",
                    "anya", "olga", "natasha", "lena", "tanya", "yulia"),
        "domains": ("mail.ru", "yandex.ru", "rambler.ru", "gmail.com", "bk.ru", "list.ru"),
        "legacy": ("koi8-r",), "legacy_share": 0.5, "tz": (3,),
    },
    "ja": {
        "greet": ("お世話になっております。", "担当者様", "こんにちは。"),
        "bye": ("よろしくお願いいたします。", "以上、よろしくお願いします。"),
        "say": (
            "昨日{product}のライセンスキーを購入しましたが、エラー{code}で認証できません。",
            "注文確認メールのダウンロードリンクの有効期限が切れています。",
            "会社名入りの領収書を送っていただけますか。",
            "注文{order}の代金が二重に請求されています。",
            "このキーは既に別のアカウントで使用されています。",
            "ゲームが起動しないので返金をお願いします。",
            "二日経っても注文{order}が保留中のままです。",
            "エラー画面のスクリーンショットを添付します。",
            "PayPalで支払いは完了しましたが、キーが届いていません。",
            "予約注文はいつ届きますか。",
        ),
        "again": ("その後いかがでしょうか。", "まだ同じ問題が発生しています。",
                  "追加の情報をお送りします。", "注文番号は{order}です。失礼しました。",
                  "無事に動きました。ありがとうございました。", "新しいキーも使えません。",
                  "三日間返事をお待ちしています。"),
        "subject": ("キーが使えません", "認証エラー{code}", "返金のお願い（注文{order}）",
                    "ダウンロードリンクの期限切れ", "領収書の発行について", "二重請求について",
                    "{product}について"),
        "first": ("翔太", "陽菜", "大輝", "美咲", "健太", "結衣", "拓也", "葵", "直樹", "さくら",
                  "蓮", "愛", "悠真", "花子", "太郎"),
        "last": ("佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "山本", "中村", "小林", "加藤",
                 "吉田", "山田", "佐々木", "山口", "松本"),
        "handles": ("sato", "suzuki", "takahashi", "tanaka", "ito", "watanabe", "yamamoto",
                    "nakamura", "kobayashi", "kato", "yoshida", "yamada", "sasaki", "yamaguchi",
                    "matsumoto"),
        "domains": ("yahoo.co.jp", "docomo.ne.jp", "gmail.com", "nifty.com", "icloud.com"),
        "legacy": ("shift_jis",), "legacy_share": 0.5, "tz": (9,),
    },
    "zh": {
        "greet": ("您好，", "你好：", "客服您好，"),
        "bye": ("谢谢！", "此致", "麻烦了，谢谢。"),
        "say": (
            "我昨天购买了{product}的激活码，但是激活时出现错误{code}。",
            "订单确认邮件里的下载链接已经过期了。",
            "请给我开一张带公司税号的发票。",
            "订单{order}被重复扣款了。",
            "这个激活码已经在别的账号上使用了。",
            "游戏无法启动，我想申请退款。",
            "订单{order}已经两天了还是显示待处理。",
            "附件是错误信息的截图。",
            "已经通过PayPal付款，但是没有收到激活码。",
            "请问预购什么时候发货？",
        ),
        "again": ("请问有进展吗？", "问题还是没有解决。", "这是您要的补充信息。",
                  "不好意思，订单号是{order}。", "已经可以用了，非常感谢！",
                  "新的激活码也不能用。", "我已经等了三天了。"),
        "subject": ("激活码无法使用", "激活错误{code}", "订单{order}退款申请", "下载链接过期",
                    "需要发票", "重复扣款", "关于{product}的问题"),
        "first": ("伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳",
                  "杰", "娟"),
        "last": ("王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴", "徐", "孙", "胡",
                 "朱", "高"),
        "handles": ("wang", "li", "zhang", "liu", "chen", "yang", "zhao", "huang", "zhou", "wu",
                    "xu", "sun", "hu", "zhu", "gao"),
        "domains": ("qq.com", "163.com", "126.com", "sina.com", "gmail.com"),
        "legacy": ("gb2312",), "legacy_share": 0.5, "tz": (8,),
    },
}
LANG_WEIGHTS = {"en": 55, "de": 12, "fr": 8, "ru": 9, "ja": 8, "zh": 8}

# What a legacy-charset user types instead of a character the charset lacks.
_FALLBACKS = str.maketrans({"€": "EUR", "’": "'", "“": '"', "”": '"', "–": "-", "…": "..."})

_WEEKDAYS = {
    "en": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
    "de": ("Mo", "Di", "Mi", "Do", "Fr", "Sa", "So"),
    "fr": ("lun", "mar", "mer", "jeu", "ven", "sam", "dim"),
    "ru": ("пн", "вт", "ср", "чт", "пт", "сб", "вс"),
    "ja": ("月", "火", "水", "木", "金", "土", "日"),
    "zh": ("一", "二", "三", "四", "五", "六", "日"),
}
_MONTHS = {
    "en": ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
    "de": ("Jan", "Feb", "März", "Apr", "Mai", "Juni", "Juli", "Aug", "Sept", "Okt", "Nov", "Dez"),
    "fr": ("janv", "févr", "mars", "avr", "mai", "juin", "juil", "août", "sept", "oct", "nov", "déc"),
    "ru": ("янв", "февр", "мар", "апр", "мая", "июн", "июл", "авг", "сент", "окт", "нояб", "дек"),
}
_OUTLOOK_FIELDS = {
    "en": ("From", "Sent", "To", "Subject"), "de": ("Von", "Gesendet", "An", "Betreff"),
    "fr": ("De", "Envoyé", "À", "Objet"), "ru": ("От", "Отправлено", "Кому", "Тема"),
    "ja": ("差出人", "送信日時", "宛先", "件名"), "zh": ("发件人", "发送时间", "收件人", "主题"),
}
_MOBILE = {"en": "Sent from my iPhone", "de": "Von meinem iPhone gesendet",
           "fr": "Envoyé de mon iPhone", "ru": "Отправлено с iPhone", "ja": "iPhoneから送信",
           "zh": "发自我的iPhone"}
_REPLY_PREFIX = {"outlook": {"de": "AW: ", "fr": "RE : "}, "default": "Re: "}
_CLIENT_BY_DOMAIN = {"gmail.com": "gmail", "outlook.com": "outlook", "hotmail.com": "outlook",
                     "outlook.de": "outlook", "outlook.fr": "outlook", "icloud.com": "apple"}
_OTHER_CLIENTS = ("outlook", "apple", "thunderbird", "webmail", "webmail", "gmail")


# --------------------------------------------------------------------------- model

@dataclass
class _Person:
    name: str
    address: str
    lang: str
    client: str          # gmail | outlook | apple | thunderbird | webmail
    legacy: str | None   # the legacy charset this person's client uses, if any
    mobile: bool


@dataclass
class _Sent:
    """What a reply needs to know about the message it answers."""

    index: int
    message_id: str
    references: tuple[str, ...]
    subject: str
    text: str            # the plain text as its reader sees it (own history included)
    sender: _Person
    date: dt.datetime
    can_parent: bool


@dataclass
class _Quote:
    """A message's own words and the history it quotes, for the HTML part."""

    own: str
    head: str = ""        # attribution line or Outlook header block
    quoted: str = ""      # the parent's text
    bottom: bool = False  # quote first, answer below

    def translate(self, table) -> _Quote:
        return _Quote(self.own.translate(table), self.head.translate(table),
                      self.quoted.translate(table), self.bottom)


@dataclass
class Corpus:
    messages: list[tuple[str, bytes]]
    parent_of: dict[str, str]                       # reply name -> parent name
    message_id: dict[str, str] = field(default_factory=dict)
    info: dict[str, dict] = field(default_factory=dict)  # name -> what was generated

    def roots(self) -> list[str]:
        return [name for name, _ in self.messages if name not in self.parent_of]


def generate(n: int, seed: int = 1) -> list[tuple[str, bytes]]:
    """``n`` raw messages as (name, bytes), shuffled; the same for the same seed."""
    return generate_corpus(n, seed).messages


def generate_with_threads(n: int, seed: int = 1) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
    """The messages and ``parent_of``: reply name -> the name of the message it answers."""
    corpus = generate_corpus(n, seed)
    return corpus.messages, corpus.parent_of


def thread_roots(parent_of: dict[str, str], name: str) -> str:
    """The first message of the thread ``name`` belongs to."""
    while name in parent_of:
        name = parent_of[name]
    return name


def write_eml(folder: str | Path, messages: list[tuple[str, bytes]]) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, raw in messages:
        path = folder / name
        path.write_bytes(raw)
        paths.append(path)
    return paths


def generate_corpus(n: int, seed: int = 1) -> Corpus:
    return _Generator(n, seed).run()


# --------------------------------------------------------------------------- generator

class _Generator:
    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.rng = random.Random(f"helpdesk-mailgen-{seed}")
        self.pool_size = max(20, n // 3)     # customers; a skewed pick makes some write often
        self.people: list[_Person] = []
        self.addresses: set[str] = set()
        self.msgids: set[str] = set()
        self.clock = dt.datetime(2026, 11, 2, 7, 30, tzinfo=dt.UTC)
        self.step = dt.timedelta(days=28) / max(n, 1)

    def run(self) -> Corpus:
        rng = self.rng
        sent: list[_Sent] = []
        raws: list[bytes] = []
        infos: list[dict] = []
        parents: dict[int, int] = {}
        for i in range(self.n):
            self.clock += self.step * (0.2 + 1.6 * rng.random())
            candidates = [s for s in sent[-400:] if s.can_parent]
            parent = None
            if candidates and rng.random() < REPLY_SHARE * self.n / max(self.n - 1, 1):
                # Recent messages are answered more often than old ones.
                pick = int(len(candidates) * (1 - rng.random() ** 2))
                parent = candidates[min(pick, len(candidates) - 1)]
                parents[i] = parent.index
            raw, record, info = self._message(i, parent)
            sent.append(record)
            raws.append(raw)
            infos.append(info)
        order = list(range(self.n))
        rng.shuffle(order)
        name_of = {index: f"msg-{pos:06d}.eml" for pos, index in enumerate(order)}
        messages = [(name_of[index], raws[index]) for index in order]
        return Corpus(
            messages=messages,
            parent_of={name_of[child]: name_of[parent] for child, parent in parents.items()},
            message_id={name_of[i]: sent[i].message_id for i in range(self.n)},
            info={name_of[i]: infos[i] for i in range(self.n)},
        )

    # --- people -------------------------------------------------------------

    def _customer(self) -> _Person:
        index = int(self.pool_size * self.rng.random() ** 1.6)
        while len(self.people) <= index:
            self.people.append(self._new_person())
        return self.people[index]

    def _new_person(self, lang: str | None = None, domain: str | None = None) -> _Person:
        rng = self.rng
        lang = lang or rng.choices(list(LANG_WEIGHTS), weights=list(LANG_WEIGHTS.values()))[0]
        pack = LANGS[lang]
        first_i, last_i = rng.randrange(len(pack["first"])), rng.randrange(len(pack["last"]))
        first, last = pack["first"][first_i], pack["last"][last_i]
        if lang == "ru" and first_i >= 8:
            last += "а"
        name = {"ja": f"{last} {first}", "zh": f"{last}{first}"}.get(lang, f"{first} {last}")
        if "handles" in pack:
            local = rng.choice(pack["handles"]) + rng.choice(("", ".", "_")) + str(rng.randrange(1, 9999))
        else:
            a, b = _ascii(first).lower(), _ascii(last).lower().replace("'", "")
            local = rng.choice((f"{a}.{b}", f"{a[0]}{b}", f"{a}{b[0]}{rng.randrange(10, 99)}",
                                f"{a}_{b}{rng.randrange(1970, 2008)}"))
        domain = domain or rng.choice(pack["domains"])
        address = f"{local}@{domain}"
        while address in self.addresses:
            address = f"{local}{rng.randrange(100, 999)}@{domain}"
        self.addresses.add(address)
        client = _CLIENT_BY_DOMAIN.get(domain) or rng.choice(_OTHER_CLIENTS)
        legacy = rng.choice(pack["legacy"]) if rng.random() < pack["legacy_share"] else None
        if legacy and client == "gmail":
            client = rng.choice(("outlook", "thunderbird", "webmail"))  # Gmail always sends UTF-8
        return _Person(name=name if rng.random() > 0.06 else "", address=address, lang=lang,
                       client=client, legacy=legacy,
                       mobile=client == "apple" and rng.random() < 0.5)

    # --- one message --------------------------------------------------------

    def _message(self, index: int, parent: _Sent | None) -> tuple[bytes, _Sent, dict]:
        rng = self.rng
        if parent is None:
            sender = self._customer()
        elif rng.random() < 0.85 or not parent.sender.address:
            sender = parent.sender
        else:  # a colleague who was copied answers
            domain = parent.sender.address.split("@", 1)[1]
            sender = self._new_person(parent.sender.lang, domain)
            sender.client = parent.sender.client
        lang, pack = sender.lang, LANGS[sender.lang]
        webform = parent is None and rng.random() < 0.03
        fill = self._filler()
        if parent is None:
            subject = rng.choice(pack["subject"]).format(**fill)
            sentences = [rng.choice(pack["say"]).format(**fill) for _ in range(rng.randint(1, 6))]
        else:
            subject = _re_subject(parent.subject, sender, lang)
            sentences = [rng.choice(pack["again"]).format(**fill) for _ in range(rng.randint(1, 3))]
        own = self._compose_text(sender, sentences)
        quote_style, parts = None, _Quote(own)
        if parent is not None:
            quote_style = sender.client
            text, parts = self._quote(own, parent, sender, quote_style)
        else:
            text = own
        date = self.clock.astimezone(dt.timezone(dt.timedelta(hours=rng.choice(pack["tz"]))))
        message_id = self._message_id(sender, date)
        references = (parent.references + (parent.message_id,))[-30:] if parent else ()

        charset = self._charset(sender, text, subject)
        if charset != "utf-8" and charset != "us-ascii":
            text, subject = text.translate(_FALLBACKS), subject.translate(_FALLBACKS)
            parts = parts.translate(_FALLBACKS)
        shape = self._shape(sender, webform)
        cte = self._cte(sender, charset, text)
        body_headers, body = self._body(shape, sender, text, parts, charset, cte)

        headers = self._headers(sender, subject, charset, date, message_id, parent, references,
                                webform)
        raw = "".join(headers).encode("utf-8") + body_headers + b"\n" + body
        if sender.client == "outlook" or rng.random() < 0.1:
            raw = raw.replace(b"\n", b"\r\n")
        record = _Sent(index=index, message_id=message_id, references=references, subject=subject,
                       text=text, sender=sender, date=date, can_parent=not webform)
        info = {"sender": sender.address, "lang": lang, "client": sender.client, "charset": charset, "cte": cte,
                "shape": shape, "reply": parent is not None, "quote": quote_style,
                "size": len(raw), "crlf": b"\r\n" in raw[:200]}
        return raw, record, info

    def _filler(self) -> dict:
        rng = self.rng
        key = "-".join("".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(5))
                       for _ in range(5))
        return {"product": rng.choice(PRODUCTS), "code": rng.choice(ERRORS),
                "order": f"DM-{rng.randrange(100000, 999999)}", "key": key,
                "price": f"{rng.randrange(5, 120)},{rng.choice(('99', '49', '00'))}"}

    def _compose_text(self, sender: _Person, sentences: list[str]) -> str:
        rng = self.rng
        pack = LANGS[sender.lang]
        paragraphs, current = [], []
        for sentence in sentences:
            current.append(sentence)
            if rng.random() < 0.45:
                paragraphs.append(current)
                current = []
        if current:
            paragraphs.append(current)
        sep = "" if sender.lang in ("ja", "zh") else " "
        blocks = [sep.join(p) for p in paragraphs]
        if sender.client in ("gmail", "thunderbird", "webmail") and sender.lang not in ("ja", "zh"):
            blocks = [textwrap.fill(b, 72) for b in blocks]
        signer = sender.name.split(" ")[0] if sender.lang not in ("ja", "zh") else sender.name
        lines = [rng.choice(pack["greet"]), "", "\n\n".join(blocks), "",
                 rng.choice(pack["bye"]) + ("\n" + signer if signer else "")]
        if sender.mobile:
            lines += ["", _MOBILE[sender.lang]]
        elif rng.random() < 0.25:
            lines += ["", "-- ", sender.name or sender.address,
                      f"+{rng.randrange(1, 99)} {rng.randrange(100, 999)} {rng.randrange(1000000, 9999999)}"]
        return "\n".join(lines) + "\n"

    def _quote(self, own: str, parent: _Sent, sender: _Person, style: str) -> tuple[str, _Quote]:
        """The reply's plain text, and its parts for the HTML version."""
        who = f"{parent.sender.name} <{parent.sender.address}>" if parent.sender.name \
            else parent.sender.address
        lang = sender.lang
        when = parent.date
        quoted = parent.text.rstrip("\n")
        if style == "outlook":
            f, s, t, subj = _OUTLOOK_FIELDS[lang]
            rule = "________________________________" if self.rng.random() < 0.7 \
                else "-----Original Message-----"
            sent = (f"{when:%A}, {when:%B} {when.day}, {when.year} {when.hour % 12 or 12}:"
                    f"{when.minute:02d} {'AM' if when.hour < 12 else 'PM'}")
            header = (f"{f}: {who}\n{s}: {sent}\n"
                      f"{t}: {SUPPORT_DISPLAY} <{SUPPORT}>\n{subj}: {parent.subject}")
            return (own + "\n" + f"{rule}\n{header}\n\n{quoted}\n",
                    _Quote(own, f"{rule}\n{header}", quoted, False))
        attribution = _attribution(lang, style, when, who)
        parts = _Quote(own, attribution, quoted, False)
        if style == "apple":
            body = "\n".join(("> " + line).rstrip() if line else ">" for line in
                             [attribution, ""] + quoted.split("\n"))
            return own + "\n" + body + "\n", parts
        plain_attribution = attribution
        if style == "gmail" and len(attribution) > 76 and self.rng.random() < 0.5:
            cut = attribution.rfind(" ", 0, 76)
            plain_attribution = attribution[:cut] + "\n" + attribution[cut + 1:]
        body = "\n".join(">" + (" " + line if line and not line.startswith(">") else line)
                         for line in quoted.split("\n"))
        if style == "thunderbird" and self.rng.random() < 0.3:   # bottom-posted
            parts.bottom = True
            return plain_attribution + "\n" + body + "\n\n" + own, parts
        return own + "\n" + plain_attribution + "\n" + body + "\n", parts

    def _message_id(self, sender: _Person, date: dt.datetime) -> str:
        rng = self.rng
        domain = sender.address.split("@", 1)[1]
        alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
        while True:
            if sender.client == "gmail":
                tail = "".join(rng.choice(alnum + "+_-") for _ in range(44))
                mid = f"CA{tail[:2]}+{tail[2:]}=Q@mail.gmail.com"
            elif sender.client == "outlook":
                box = f"{rng.choice(('AM9PR07', 'DB9PR02', 'PAXPR08', 'SN6PR11', 'BY5PR20'))}MB{rng.randrange(1000, 9999)}"
                region = rng.choice(("eurprd07", "eurprd02", "namprd11", "namprd20"))
                mid = f"{box}{_hex(rng, 8).upper()}{_hex(rng, 16).upper()}@{box}.{region}.prod.outlook.com"
            elif sender.client == "apple":
                mid = f"{_uuid(rng).upper()}@{domain}"
            elif sender.client == "thunderbird":
                mid = f"{_uuid(rng)}@{domain}"
            else:
                mid = f"{int(date.timestamp())}.{_hex(rng, 12)}@{rng.choice(('mx', 'web', 'f'))}{rng.randrange(1, 300)}.{domain}"
            if mid not in self.msgids:
                self.msgids.add(mid)
                return mid

    def _charset(self, sender: _Person, text: str, subject: str) -> str:
        if sender.legacy:
            try:
                (text + subject).translate(_FALLBACKS).encode(sender.legacy)
                return sender.legacy
            except UnicodeEncodeError:
                pass
        if (text + subject).isascii() and sender.client in ("outlook", "thunderbird"):
            return "us-ascii"
        return "utf-8"

    def _shape(self, sender: _Person, webform: bool) -> str:
        r = self.rng.random()
        if webform:
            return "html" if r < 0.5 else "plain"
        if r < 0.18:
            return "mixed"
        if r < 0.22:
            return "related"
        preferred = {"gmail": ("alt", "alt", "alt", "html"), "outlook": ("alt", "alt", "html"),
                     "apple": ("alt", "plain", "plain"), "thunderbird": ("plain", "plain", "alt"),
                     "webmail": ("html", "alt", "plain")}[sender.client]
        return self.rng.choice(preferred)

    def _cte(self, sender: _Person, charset: str, text: str) -> str:
        rng = self.rng
        if charset == "us-ascii":
            return "7bit"
        if charset in ("iso-8859-1", "windows-1252"):
            return rng.choice(("quoted-printable", "quoted-printable", "8bit"))
        if charset in ("koi8-r", "shift_jis", "gb2312"):
            return rng.choice(("base64", "8bit", "quoted-printable"))
        if sender.client == "gmail":
            return "quoted-printable" if sender.lang in ("en", "de", "fr") else "base64"
        if sender.client == "thunderbird":
            return "8bit"
        return rng.choice(("quoted-printable", "base64", "8bit"))

    # --- MIME ---------------------------------------------------------------

    def _body(self, shape, sender, text, parts, charset, cte) -> tuple[bytes, bytes]:
        plain = self._leaf("plain", text, charset, cte, sender)

        def html_part(extra: str = "") -> tuple[bytes, bytes]:
            html_cte = "quoted-printable" if sender.client == "outlook" and cte in ("7bit", "8bit") else cte
            return self._leaf("html", _to_html(parts, sender, charset, extra), charset,
                              html_cte, sender)

        if shape == "plain":
            return plain
        if shape == "html":
            return html_part()
        if shape == "related":   # text + (HTML + the inline image it shows), as Outlook and Apple Mail send it
            cid = f"image001.png@01DB{_hex(self.rng, 4).upper()}.{_hex(self.rng, 8).upper()}"
            image = self._attachment("png", sender, inline_cid=cid)
            related = self._multipart("related", [html_part(f'<div><img src="cid:{cid}" width="640" '
                                                            f'height="360"></div>\n'), image],
                                      sender, params='; type="text/html"')
            return self._multipart("alternative", [plain, related], sender)
        alternative = self._multipart("alternative", [plain, html_part()], sender)
        if shape == "alt":
            return alternative
        count = self.rng.choices((1, 2, 3), weights=(70, 22, 8))[0]
        files = [self._attachment(self.rng.choice(("pdf", "png")), sender) for _ in range(count)]
        first = alternative if self.rng.random() < 0.6 else plain
        return self._multipart("mixed", [first, *files], sender)

    def _leaf(self, subtype: str, text: str, charset: str, cte: str, sender) -> tuple[bytes, bytes]:
        data = text.encode(charset)
        if cte == "7bit" and not data.isascii():
            cte = "quoted-printable"
        params = f'; charset="{charset}"' if sender.client != "thunderbird" else f"; charset={charset}"
        if subtype == "plain" and sender.client == "thunderbird" and cte != "base64":
            params += "; format=flowed"
        head = f"Content-Type: text/{subtype}{params}\nContent-Transfer-Encoding: {cte}\n"
        return head.encode(), _encode(data, cte)

    def _multipart(self, subtype, parts, sender, params="") -> tuple[bytes, bytes]:
        boundary = self._boundary(sender)
        head = f'Content-Type: multipart/{subtype};\n\tboundary="{boundary}"{params}\n'
        chunks = []
        if sender.client in ("outlook", "thunderbird") and subtype == "mixed":
            chunks.append(b"This is a multi-part message in MIME format.\n")
        for part_head, part_body in parts:
            chunks.append(f"\n--{boundary}\n".encode() + part_head + b"\n" + part_body)
        chunks.append(f"\n--{boundary}--\n".encode())
        return head.encode(), b"".join(chunks)

    def _boundary(self, sender: _Person) -> str:
        rng = self.rng
        if sender.client == "gmail":
            return "000000000000" + _hex(rng, 16)
        if sender.client == "outlook":
            return f"_000_{_hex(rng, 30).upper()}_"
        if sender.client == "apple":
            return f"Apple-Mail={_uuid(rng).upper()}"
        return "------------" + "".join(rng.choice("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH")
                                        for _ in range(24))

    def _attachment(self, kind: str, sender: _Person, inline_cid: str | None = None) -> tuple[bytes, bytes]:
        rng = self.rng
        size = rng.randint(2 * 1024, 60 * 1024)
        if kind == "pdf":
            data = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + rng.randbytes(size - 24) + b"\n%%EOF\n"
            ctype = "application/pdf"
            stem = rng.choice(("invoice", "receipt", "order-confirmation", "bank-statement",
                               {"de": "Rechnung", "fr": "facture", "ru": "счёт", "ja": "領収書",
                                "zh": "发票"}.get(sender.lang, "invoice")))
        else:
            data = b"\x89PNG\r\n\x1a\n" + rng.randbytes(size - 8)
            ctype = "image/png"
            stem = rng.choice(("screenshot", "image001", "error", "IMG_" + str(rng.randrange(1000, 9999)),
                               {"de": "Bildschirmfoto", "fr": "capture d'écran", "ru": "скриншот",
                                "ja": "スクリーンショット", "zh": "截图"}.get(sender.lang, "Screenshot")))
        filename = f"{stem}.{kind}"
        if filename.isascii():
            name_params = (f'; name="{filename}"', f'; filename="{filename}"')
        elif sender.client in ("gmail", "apple", "webmail"):   # RFC 2047 in quotes: not standard, common
            word = _encoded_words(filename, "utf-8", "B")
            name_params = (f'; name="{word}"', f'; filename="{word}"')
        else:                                                  # RFC 2231
            quoted = "".join(chr(b) if chr(b).isalnum() or chr(b) in "-._" else f"%{b:02X}"
                             for b in filename.encode("utf-8"))
            name_params = (f"; name*=utf-8''{quoted}", f"; filename*=utf-8''{quoted}")
        lines = [f"Content-Type: {ctype}{name_params[0]}"]
        if inline_cid:
            lines += [f"Content-Disposition: inline{name_params[1]}", f"Content-ID: <{inline_cid}>"]
        else:
            lines.append(f"Content-Disposition: attachment{name_params[1]}")
        lines.append("Content-Transfer-Encoding: base64")
        if sender.client == "gmail" and not inline_cid:
            lines.append(f"X-Attachment-Id: f_{_hex(rng, 9)}")
        return ("\n".join(lines) + "\n").encode("utf-8"), base64.encodebytes(data)

    # --- header block -------------------------------------------------------

    def _headers(self, sender, subject, charset, date, message_id, parent, references, webform) -> list[str]:
        rng = self.rng
        domain = sender.address.split("@", 1)[1]
        received = date.astimezone(dt.UTC) + dt.timedelta(seconds=rng.randrange(1, 40))
        ip = f"{rng.randrange(20, 220)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        relay = {"gmail": f"mail-{rng.choice(('ed1', 'wr1', 'lj1', 'pl1'))}-f{rng.randrange(40, 200)}.google.com",
                 "outlook": f"{rng.choice(('EUR05', 'NAM12', 'EUR03'))}-AM6-obe.outbound.protection.outlook.com"
                 }.get(sender.client, f"mx{rng.randrange(1, 9)}.{domain}")
        hname = (f"Received: from {relay} ({relay} [{ip}])\n\tby mx.shop.example (Postfix) with ESMTPS id "
                 f"4{''.join(rng.choice('BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz0123456789') for _ in range(10))}\n"
                 f"\tfor <{SUPPORT}>; {_rfc_date(received)} (UTC)\n")
        out = [f"Return-Path: <{sender.address}>\n", f"Delivered-To: {SUPPORT}\n", hname]
        if rng.random() < 0.6:
            inner = received - dt.timedelta(seconds=rng.randrange(1, 5))
            out.append(f"Received: by {rng.randrange(2000, 9999)}:{_hex(rng, 4)}:{_hex(rng, 4)}::{_hex(rng, 3)} "
                       f"with SMTP id {_hex(rng, 10)};\n        {_rfc_date(inner)}\n")
        out.append(f"Authentication-Results: mx.shop.example; dkim=pass header.d={domain}; "
                   f"spf=pass smtp.mailfrom={domain}; dmarc=pass header.from={domain}\n")
        if sender.client in ("gmail", "outlook") or rng.random() < 0.5:
            sig = base64.b64encode(rng.randbytes(256)).decode()
            bh = base64.b64encode(rng.randbytes(32)).decode()
            folded = "\n\t ".join(sig[i:i + 70] for i in range(0, len(sig), 70))
            out.append(f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s=s{rng.randrange(2019, 2026)};\n"
                       f"\t t={int(date.timestamp())}; x={int(date.timestamp()) + 604800}; darn=shop.example;\n"
                       "\t h=to:subject:message-id:date:from:mime-version:from:to:cc:subject\n"
                       f"\t :date:message-id:reply-to;\n\t bh={bh};\n\t b={folded}\n")
        if sender.client == "gmail":
            out.append(f"X-Google-Smtp-Source: AGHT+I{base64.b64encode(rng.randbytes(60)).decode()}\n")
            out.append(f"X-Gm-Message-State: AOJu0Y{base64.b64encode(rng.randbytes(45)).decode()}\n")
        out.append("MIME-Version: 1.0\n")
        from_name = sender.name
        if webform:
            from_value = f'"{_ascii(sender.name) or "Customer"} via Contact Form" <forms@shop-forms.example>'
        else:
            from_value = _mailbox(from_name, sender.address, charset, rng)
        out.append(f"From: {from_value}\n")
        if webform:
            out.append(f"Reply-To: {_mailbox(from_name, sender.address, charset, rng)}\n")
        out.append(f"Date: {_rfc_date(date)}\n")
        out.append(f"Message-ID: <{message_id}>\n")
        if parent is not None:
            out.append(f"In-Reply-To: <{parent.message_id}>\n")
            out.append("References: " + "\n ".join(f"<{r}>" for r in references) + "\n")
        out.append("Subject: " + self._subject_value(subject, charset, sender) + "\n")
        to = rng.choice((SUPPORT, f"{SUPPORT_DISPLAY} <{SUPPORT}>", f'"{SUPPORT_DISPLAY}" <{SUPPORT}>'))
        out.append(f"To: {to}\n")
        if parent is not None and parent.sender.address != sender.address:
            out.append(f"Cc: {_mailbox(parent.sender.name, parent.sender.address, charset, rng)}\n")
        if sender.client == "outlook":
            out.append(f"Thread-Topic: {_encoded_words(subject, charset, 'Q') if not subject.isascii() else subject}\n")
            out.append(f"Thread-Index: AQH{base64.b64encode(rng.randbytes(24)).decode()}\n")
            local = {"de": "de-DE", "fr": "fr-FR", "ru": "ru-RU", "ja": "ja-JP", "zh": "zh-CN"}.get(sender.lang)
            out.append("Accept-Language: " + (f"{local}, en-US" if local else "en-US") + "\n")
            out.append("X-MS-Has-Attach: \nX-MS-TNEF-Correlator: \n")
            out.append(f"x-ms-exchange-messagesentrepresentingtype: 1\nx-ms-traffictypediagnostic: {_hex(rng, 6).upper()}:EE_\n")
        elif sender.client == "apple":
            out.append("X-Mailer: " + ("iPhone Mail (22B83)" if sender.mobile else "Apple Mail (2.3826.200.121)") + "\n")
        elif sender.client == "thunderbird":
            out.append("User-Agent: Mozilla Thunderbird\n")
            out.append("Content-Language: " + {"en": "en-US"}.get(sender.lang, sender.lang) + "\n")
        elif sender.client == "webmail":
            mailer = {"ru": ("Mail.ru Mailer 1.0", "Yandex.Mail"), "zh": ("Foxmail 7.2.25", "QQMail 2.x"),
                      "ja": ("Yahoo Mail", "Becky! ver. 2.81")}.get(sender.lang, ("Roundcube Webmail/1.6.9",
                                                                                 "Yahoo Mail"))
            out.append(f"X-Mailer: {rng.choice(mailer)}\n")
        return out

    def _subject_value(self, subject: str, charset: str, sender: _Person) -> str:
        rng = self.rng
        if subject.isascii():
            return subject
        if rng.random() < 0.02:
            return subject   # raw 8-bit UTF-8 in the header, as some servers let through
        cs = charset if charset != "us-ascii" else "utf-8"
        enc = "Q" if cs in ("iso-8859-1", "windows-1252") or (
            cs == "utf-8" and sender.lang in ("de", "fr") and rng.random() < 0.5) else "B"
        prefix, rest = "", subject
        if sender.client == "outlook" and subject[:4] in ("RE: ", "AW: ", "Re: "):
            prefix, rest = subject[:4], subject[4:]
        return prefix + _encoded_words(rest, cs, enc)


# --------------------------------------------------------------------------- helpers

def _re_subject(subject: str, sender: _Person, lang: str) -> str:
    if sender.client == "outlook":
        prefix = _REPLY_PREFIX["outlook"].get(lang, "RE: ")
    else:
        prefix = _REPLY_PREFIX["default"]
    for known in ("Re: ", "RE: ", "AW: ", "RE : "):
        if subject.startswith(known):
            subject = subject[len(known):]
            break
    return prefix + subject


def _attribution(lang: str, style: str, when: dt.datetime, who: str) -> str:
    wd, d, y, hh, mm = when.weekday(), when.day, when.year, when.hour, when.minute
    mon = when.month
    if style == "apple":
        if lang == "de":
            return f"Am {d:02d}.{mon:02d}.{y} um {hh:02d}:{mm:02d} schrieb {who}:"
        return f"On {d} {_MONTHS['en'][mon - 1]} {y}, at {hh:02d}:{mm:02d}, {who} wrote:"
    if style == "thunderbird":
        if lang == "de":
            return f"Am {d:02d}.{mon:02d}.{y % 100:02d} um {hh:02d}:{mm:02d} schrieb {who}:"
        return f"On {d:02d}/{mon:02d}/{y} {hh:02d}:{mm:02d}, {who} wrote:"
    if lang == "de":
        return f"Am {_WEEKDAYS['de'][wd]}., {d}. {_MONTHS['de'][mon - 1]}. {y} um {hh:02d}:{mm:02d} Uhr schrieb {who}:"
    if lang == "fr":
        return f"Le {_WEEKDAYS['fr'][wd]}. {d} {_MONTHS['fr'][mon - 1]}. {y} à {hh:02d}:{mm:02d}, {who} a écrit :"
    if lang == "ru":
        return f"{_WEEKDAYS['ru'][wd]}, {d} {_MONTHS['ru'][mon - 1]}. {y} г. в {hh:02d}:{mm:02d}, {who}:"
    if lang == "ja":
        return f"{y}年{mon}月{d}日({_WEEKDAYS['ja'][wd]}) {hh}:{mm:02d} {who}:"
    if lang == "zh":
        return f"{who} 于{y}年{mon}月{d}日周{_WEEKDAYS['zh'][wd]} {hh:02d}:{mm:02d}写道："
    h12 = hh % 12 or 12
    return (f"On {_WEEKDAYS['en'][wd]}, {_MONTHS['en'][mon - 1]} {d}, {y} at {h12}:{mm:02d}"
            f"\u202f{'AM' if hh < 12 else 'PM'} {who} wrote:")


def _to_html(parts: _Quote, sender: _Person, charset: str, extra: str = "") -> str:
    """The HTML part the client would send: own words as divs, history as the client marks it up."""
    def para(block: str) -> str:
        return "<br>\n".join(html.escape(line) for line in block.split("\n"))

    body = "".join(f"<div>{para(b)}</div>\n<div><br></div>\n"
                   for b in parts.own.strip("\n").split("\n\n")) + extra
    quote = ""
    if parts.head:
        if sender.client == "gmail":
            body = f'<div dir="ltr">{body}</div>'
            quote = (f'<br><div class="gmail_quote gmail_quote_container">'
                     f'<div dir="ltr" class="gmail_attr">{html.escape(parts.head)}<br></div>'
                     f'<blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex;'
                     f'border-left:1px solid rgb(204,204,204);padding-left:1ex">{para(parts.quoted)}'
                     f"</blockquote></div>\n")
        elif sender.client == "outlook":
            rule, _, fields = parts.head.partition("\n")
            fields_html = "<br>\n".join(
                f"<b>{html.escape(k)}:</b>{html.escape(v)}"
                for k, _, v in (line.partition(":") for line in fields.split("\n")))
            separator = ('<hr style="display:inline-block;width:98%" tabindex="-1">' if rule.startswith("_")
                         else f"<div>{html.escape(rule)}</div>")
            quote = ('<div id="appendonsend"></div>\n' + separator +
                     f'\n<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri, sans-serif" '
                     f'style="font-size:11pt" color="#000000">{fields_html}</font>\n<div>&nbsp;</div></div>\n'
                     f"<div>{para(parts.quoted)}</div>\n")
        else:
            quote = (f"<div>{html.escape(parts.head)}<br></div>\n"
                     f'<blockquote type="cite">{para(parts.quoted)}</blockquote>\n')
    body = quote + body if parts.bottom else body + quote
    if sender.client == "outlook":
        return (f'<html>\n<head>\n<meta http-equiv="Content-Type" content="text/html; charset={charset}">\n'
                '<style type="text/css" style="display:none;"> P {margin-top:0;margin-bottom:0;} </style>\n'
                '<style><!--\n@font-face\n\t{font-family:"Cambria Math";\n\tpanose-1:2 4 5 3 5 4 6 3 2 4;}\n'
                '@font-face\n\t{font-family:Calibri;\n\tpanose-1:2 15 5 2 2 2 4 3 2 4;}\n'
                'p.MsoNormal, li.MsoNormal, div.MsoNormal\n\t{margin:0cm;\n\tfont-size:11.0pt;\n'
                '\tfont-family:"Calibri",sans-serif;}\n.MsoChpDefault\n\t{mso-style-type:export-only;}\n'
                '@page WordSection1\n\t{size:612.0pt 792.0pt;\n\tmargin:72.0pt 72.0pt 72.0pt 72.0pt;}\n'
                'div.WordSection1\n\t{page:WordSection1;}\n--></style>\n</head>\n'
                '<body dir="ltr">\n<div class="elementToProof" style="font-family: Aptos, Calibri, '
                f'Helvetica, sans-serif; font-size: 12pt; color: rgb(0, 0, 0);">\n{body}</div>\n</body>\n</html>\n')
    if sender.client == "apple":
        return (f'<html><head><meta http-equiv="content-type" content="text/html; charset={charset}"></head>'
                '<body style="overflow-wrap: break-word; -webkit-nbsp-mode: space; line-break: after-white-space;">'
                f"{body}</body></html>\n")
    if sender.client == "gmail":
        return body if parts.head else f'<div dir="ltr">{body}</div>\n'
    return (f'<!DOCTYPE html>\n<html>\n  <head>\n    <meta http-equiv="Content-Type" content="text/html; '
            f'charset={charset}">\n  </head>\n  <body>\n{body}  </body>\n</html>\n')


def _encode(data: bytes, cte: str) -> bytes:
    if cte == "base64":
        return base64.encodebytes(data)
    if cte == "quoted-printable":
        encoded = quopri.encodestring(data)
        return encoded if encoded.endswith(b"\n") else encoded + b"\n"
    return data if data.endswith(b"\n") else data + b"\n"


def _encoded_words(text: str, charset: str, enc: str) -> str:
    """RFC 2047 words of at most 75 characters, folded; never splits a character."""
    words, chunk = [], ""
    overhead = len(f"=?{charset}?{enc}??=")

    def encoded(piece: str) -> str:
        data = piece.encode(charset)
        if enc == "B":
            return base64.b64encode(data).decode()
        return "".join(chr(b) if (chr(b).isalnum() and b < 128) else "_" if b == 32 else f"={b:02X}"
                       for b in data)

    for ch in text:
        if chunk and len(encoded(chunk + ch)) + overhead > 75:
            words.append(chunk)
            chunk = ""
        chunk += ch
    if chunk:
        words.append(chunk)
    return "\n ".join(f"=?{charset}?{enc}?{encoded(w)}?=" for w in words)


def _mailbox(name: str, address: str, charset: str, rng: random.Random) -> str:
    if not name:
        return f"<{address}>" if rng.random() < 0.5 else address
    if name.isascii():
        return f'"{name}" <{address}>' if ("'" in name or rng.random() < 0.5) else f"{name} <{address}>"
    cs = charset if charset != "us-ascii" else "utf-8"
    try:
        name.encode(cs)
    except UnicodeEncodeError:
        cs = "utf-8"
    enc = "Q" if cs in ("iso-8859-1", "windows-1252") else "B"
    return f"{_encoded_words(name, cs, enc)} <{address}>"


def _rfc_date(moment: dt.datetime) -> str:
    offset = moment.utcoffset() or dt.timedelta()
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return (f"{_WEEKDAYS['en'][moment.weekday()]}, {moment.day:02d} {_MONTHS['en'][moment.month - 1]} "
            f"{moment.year} {moment:%H:%M:%S} {sign}{minutes // 60:02d}{minutes % 60:02d}")


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


def _hex(rng: random.Random, n: int) -> str:
    return f"{rng.getrandbits(4 * n):0{n}x}"


def _uuid(rng: random.Random) -> str:
    h = _hex(rng, 32)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-{h[20:]}"


# --------------------------------------------------------------------------- CLI

def _summary(corpus: Corpus) -> str:
    infos = list(corpus.info.values())
    lines = [(f"{len(infos)} messages, {len(corpus.parent_of)} replies, "
             f"{len(corpus.roots())} thread roots, "
             f"{len({i['sender'] for i in infos})} senders, "
             f"{sum(i['size'] for i in infos) / 1e6:.1f} MB")]
    for key in ("shape", "charset", "cte", "client", "lang", "quote", "crlf"):
        counts = Counter(str(i[key]) for i in infos)
        lines.append(f"  {key:8} " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))
    names = [name for name, _ in corpus.messages]
    position = {name: i for i, name in enumerate(names)}
    early = sum(position[c] < position[p] for c, p in corpus.parent_of.items())
    lines.append(f"  replies before their parent: {early}")
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--write", metavar="DIR", help="write the .eml files here")
    args = parser.parse_args(argv)
    corpus = generate_corpus(args.n, args.seed)
    print(_summary(corpus))
    if args.write:
        write_eml(args.write, corpus.messages)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
