"""The demo's scripted people: what each one answers to which email, and how their mail client writes it.

A persona reacts to the emails it really receives (by `X-Mailflow-Kind`, the n-th of that kind):
`script[kind][n]` is a `Say` (a reply some hours later), `None` (silence), and the last entry
repeats. Replies are built as the named client builds them -- To: the Reply-To (its signed token),
In-Reply-To: the Message-ID, the original quoted below in the client's own style -- so the real
parser, correlation and lifecycle read them. Nothing here touches the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from zoneinfo import ZoneInfo

PARIS = ZoneInfo("Europe/Paris")
DAYS = ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche")
MONTHS = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre", "novembre", "décembre")
MONTHS_SHORT = ("janv.", "févr.", "mars", "avr.", "mai", "juin", "juil.", "août", "sept.", "oct.", "nov.", "déc.")
CLIENT_DOMAINS = {"gmail": "mail.gmail.com", "outlook": "EUR03.PROD.OUTLOOK.COM", "apple": "icloud.com", "iphone": "icloud.com"}
CLIENT_NAMES = {"gmail": "Gmail", "outlook": "Outlook FR", "apple": "Apple Mail", "iphone": "iPhone"}


@dataclass(frozen=True)
class Say:
    """One scripted answer: `text` after `after_h` hours; `how` is reply, auto_reply or bounce."""

    text: str = ""
    after_h: float = 20.0
    how: str = "reply"


@dataclass(frozen=True)
class Persona:
    ref: str
    role: str  # mentor | mentee
    client: str  # gmail | outlook | apple | iphone
    script: Mapping[str, tuple[Say | None, ...]] = field(default_factory=dict)

    def answer(self, kind: str, n: int) -> Say | None:
        """The n-th (0-based) email of this kind gets script[kind][n]; the last entry repeats."""
        lines = self.script.get(kind, ())
        return lines[min(n, len(lines) - 1)] if lines else None


def _s(text: str, after_h: float = 20.0, how: str = "reply") -> Say:
    return Say(text, after_h, how)


OK = (_s("1", 6), _s("1 tout va bien, merci !", 30), _s("1", 52))
PERSONAS: tuple[Persona, ...] = (
    # P01: the pair that works -- the mentee writes back at once, both answer every month.
    Persona("P01", "mentor", "gmail", {
        "introduction": (_s("Bien reçu, merci ! J'écris à Zoé ce soir.", 3),),
        "followup": (_s("1 tout va bien, on s'est vues au CDI pour parler des métiers du numérique", 9), *OK),
        "checkpoint": (_s("Oui, on continue ! Zoé prépare ses vœux, je l'accompagne jusqu'au bout.", 27),),
    }),
    Persona("P01", "mentee", "iphone", {
        "introduction": (_s("Bonjour, merci beaucoup ! On s'est appelées hier soir avec Camille, premier rendez-vous jeudi au CDI.", 26),),
        "followup": (_s("1", 4), _s("1 super, j'ai fait un stage d'une journée dans son entreprise", 28), _s("1", 50)),
        "checkpoint": (_s("Oui on continue :)", 31),),
    }),
    # P02: silence -- reminders on days 7 and 14, ended_no_contact on day 21, rematch.
    Persona("P02", "mentor", "outlook", {
        "no_contact_notice": (_s("Dommage. Je reste disponible pour accompagner un autre jeune.", 22),),
    }),
    # P03: an out-of-office first, a real answer after the first reminder; a difficulty later.
    Persona("P03", "mentor", "outlook", {
        "introduction": (_s("Merci, bien reçu. J'attends le message de Léa.", 5),),
        "followup": (_s("1", 20), _s("2 - on rencontre une difficulté : Léa stresse pour ses dossiers, un conseil ?", 18), *OK),
        "checkpoint": (_s("continuer", 45),),
    }),
    Persona("P03", "mentee", "iphone", {
        "introduction": (_s("Je suis en stage d'observation jusqu'au 10 septembre et je n'ai pas accès à mes e-mails. "
                            "Je vous répondrai à mon retour.", 0.05, "auto_reply"),),
        "first_contact_reminder": (_s("Bonjour ! Désolée, j'étais en stage. J'ai écrit à Sophie, on se voit samedi.", 30),),
        "followup": (_s("1 ça va", 40), *OK),
        "checkpoint": (_s("oui on continue", 8),),
    }),
    # P04: the mentee's address has a typo -- a DSN comes back; the referent calls and corrects it.
    Persona("P04", "mentor", "apple", {
        "introduction": (_s("Bien reçu, merci ! I'll write to Amadou tonight.", 2),),
        "followup": (_s("1 all good, we met on Saturday", 12), *OK),
        "checkpoint": (_s("Oui, on continue.", 20),),
    }),
    Persona("P04", "mentee", "gmail", {
        "introduction": (_s("550 5.1.1 <amadou.dialo@example.net>: Recipient address rejected: User unknown", 0.02, "bounce"),),
        "first_contact_reminder": (_s("Bonjour, oui j'ai bien eu David au téléphone, on s'est rencontrés hier !", 6),),
        "followup": (_s("1", 26), *OK),
        "checkpoint": (_s("oui", 16),),
    }),
    # P05: the mentee asks to stop after two months; the referent closes; the mentor is available again.
    Persona("P05", "mentor", "gmail", {
        "introduction": (_s("Bien reçu, merci ! Je contacte Hugo demain.", 14),),
        "followup": (_s("1 très bien, Hugo a décroché deux entretiens", 7), _s("1", 30)),
        "closure": (_s("Disponible, avec plaisir !", 26),),
    }),
    Persona("P05", "mentee", "apple", {
        "introduction": (_s("Bonjour, j'ai rencontré Nadia hier, c'était top, merci !", 48),),
        "followup": (_s("1", 11), _s("3 — nous souhaitons arrêter : j'ai signé mon contrat d'alternance, merci pour tout !", 20)),
    }),
    # P06: the mentee writes in distress -> urgent flag and urgent_alert in the same pass.
    Persona("P06", "mentor", "outlook", {
        "followup": OK,
        "checkpoint": (_s("Oui, nous continuons.", 24),),
    }),
    Persona("P06", "mentee", "gmail", {
        "introduction": (_s("Bonjour, merci. Thomas m'a écrit, on s'est vus au café mercredi.", 40),),
        "followup": (_s("1", 10), _s("1 ça va", 20),
                     _s("Je ne vais pas bien en ce moment, je n'arrive plus à me lever le matin et j'ai "
                        "l'impression que rien n'a de sens. J'ai besoin d'aide.", 15), *OK),
        "checkpoint": (_s("on continue", 30),),
    }),
    # P07: the mentee misses a month -> followup_reminder, then a call flag; the referent calls.
    Persona("P07", "mentor", "apple", {
        "introduction": (_s("Bien reçu, merci pour la mise en relation ! J'appelle Manon cette semaine.", 8),),
        "followup": OK,
        "checkpoint": (_s("Oui, on continue jusqu'aux résultats Parcoursup.", 28),),
    }),
    Persona("P07", "mentee", "gmail", {
        "introduction": (_s("Bonjour, on s'est appelés avec Karim hier soir, premier rendez-vous samedi.", 55),),
        "followup": (_s("1", 8), None, _s("1 tout va bien, désolée pour le silence le mois dernier", 20), *OK),
        "followup_reminder": (None,),
        "checkpoint": (_s("oui", 10),),
    }),
    # P08: the mentor closes at six months.
    Persona("P08", "mentor", "outlook", {
        "introduction": (_s("Bonjour, parfait, je prends contact avec Lucas.", 4),),
        "followup": OK,
        "checkpoint": (_s("arrêter — Lucas est entré en apprentissage, nous avons fait le tour. Merci !", 20),),
        "closure": (_s("Pas disponible pour le moment, peut-être à la rentrée prochaine.", 40),),
    }),
    Persona("P08", "mentee", "iphone", {
        "introduction": (_s("Bonjour, on s'est rencontrés avec Élodie au restaurant, c'était génial !", 70),),
        "followup": OK,
    }),
)  # fmt: skip


def persona(ref: str, role: str) -> Persona | None:
    return next((p for p in PERSONAS if p.ref == ref and p.role == role), None)


# ---- how each mail client writes a reply -------------------------------------------------------


def _original_text(original: EmailMessage) -> str:
    body = original.get_body(("plain",))
    return body.get_content() if body is not None else ""


def _short_date(at: datetime) -> str:
    local = at.astimezone(PARIS)
    return f"{local.day} {MONTHS_SHORT[local.month - 1]} {local.year} à {local:%H:%M}"


def _long_date(at: datetime) -> str:
    local = at.astimezone(PARIS)
    return f"{DAYS[local.weekday()]} {local.day} {MONTHS[local.month - 1]} {local.year} {local:%H:%M}"


def _quoted(text: str) -> str:
    return "\n".join(("> " + line).rstrip() for line in text.splitlines())


def _body(client: str, text: str, original: EmailMessage, sent_at: datetime) -> str:
    sender = str(original["From"])
    orig = _original_text(original)
    if client == "outlook":
        return (f"{text}\n\n________________________________\nDe : {sender}\nEnvoyé : {_long_date(sent_at)}\n"
                f"À : {original['To']}\nObjet : {original['Subject']}\n\n{orig}\n")  # fmt: skip
    if client == "iphone":
        return f"{text}\n\nEnvoyé de mon iPhone\n\n> Le {_short_date(sent_at)}, {sender} a écrit :\n>\n{_quoted(orig)}\n"
    if client == "apple":
        return f"{text}\n\n> Le {_short_date(sent_at)}, {sender} a écrit :\n>\n{_quoted(orig)}\n"
    local = sent_at.astimezone(PARIS)
    day = ("lun.", "mar.", "mer.", "jeu.", "ven.", "sam.", "dim.")[local.weekday()]
    return f"{text}\n\nLe {day} {_short_date(sent_at)}, {sender} a écrit :\n\n{_quoted(orig)}\n"


def write_reply(original: EmailMessage, say: Say, sender: str, client: str, at: datetime) -> bytes:
    """A human reply or an out-of-office, as `client` would send it at `at`."""
    sent_at = original["Date"].datetime if original["Date"] else at
    msg = EmailMessage()
    msg["From"] = sender
    msg["Date"] = format_datetime(at.astimezone(PARIS))
    msg["Message-ID"] = make_msgid(domain=CLIENT_DOMAINS[client])
    msg["In-Reply-To"] = original["Message-ID"]
    msg["References"] = original["Message-ID"]
    if say.how == "auto_reply":
        msg["To"] = str(original["Return-Path"] or original["Reply-To"])
        msg["Subject"] = f"Réponse automatique : {original['Subject']}"
        msg["Auto-Submitted"] = "auto-replied"
        msg["X-Auto-Response-Suppress"] = "All"
        msg.set_content(say.text + "\n")
        return msg.as_bytes()
    msg["To"] = str(original["Reply-To"])
    msg["Subject"] = ("RE: " if client == "outlook" else "Re: ") + str(original["Subject"])
    if client == "outlook":
        msg["X-Mailer"] = "Microsoft Outlook 16.0"
        msg["Thread-Index"] = "AdsQk1demoThreadIndex=="
    elif client in ("apple", "iphone"):
        msg["X-Mailer"] = "iPhone Mail (21G93)" if client == "iphone" else "Apple Mail (2.3776.700.51)"
    msg.set_content(_body(client, say.text, original, sent_at))
    return msg.as_bytes()


def write_dsn(original: EmailMessage, envelope_from: str, recipient: str, diagnostic: str, at: datetime) -> bytes:
    """An RFC 3464 delivery status notification from the recipient's MX, to the VERP bounce address."""
    boundary = "dsn-" + make_msgid(domain="mx").strip("<>").replace("@", ".")
    headers = "".join(f"{k}: {v}\r\n" for k, v in original.items() if k in ("From", "To", "Subject", "Message-ID", "Date"))
    text = (
        f"From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\nTo: {envelope_from}\r\n"
        f"Subject: Undelivered Mail Returned to Sender\r\nDate: {format_datetime(at.astimezone(PARIS))}\r\n"
        f"Message-ID: {make_msgid(domain='mx.example.net')}\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        "This is the mail system at host mx.example.net.\r\n\r\nI'm sorry to have to inform you that your message\r\n"
        f"could not be delivered to one or more recipients.\r\n\r\n<{recipient}>: {diagnostic}\r\n\r\n"
        f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mx.example.net\r\nArrival-Date: {format_datetime(at)}\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nOriginal-Recipient: rfc822;{recipient}\r\nAction: failed\r\n"
        f"Status: 5.1.1\r\nRemote-MTA: dns; mx.example.net\r\nDiagnostic-Code: smtp; {diagnostic}\r\n\r\n"
        f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n{headers}\r\n--{boundary}--\r\n"
    )
    return text.encode("utf-8")


def write_referent_reply(original: EmailMessage, lines: list[str], sender: str, at: datetime) -> bytes:
    """A referent's answer to the digest: one command per line, from Outlook."""
    return write_reply(original, Say("\n".join(lines)), sender, "outlook", at)
