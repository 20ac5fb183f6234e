"""Hand-built French replies in the styles of real clients, top-posted over our own email.

The quoted original carries our words ("difficulté", "arrêter"): they must neither survive in
the visible text nor change the intent.
"""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from mailflow.core.mail import classify_intent, parse_message
from mailflow.core.mail.intent import Vocabulary
from mailflow.core.model import EmailKind, Intent, MessageKind

ORIGINAL = (
    "Bonjour Marie,\n\nOù en êtes-vous avec Lucas ? Il suffit de répondre avec un chiffre :\n"
    "1 = tout va bien\n2 = nous rencontrons une difficulté\n3 = nous souhaitons arrêter\n\n"
    "L'équipe Mentorat"
)
ORIGINAL_HTML = "<p>Bonjour Marie,</p><p>1 = tout va bien<br>2 = nous rencontrons une difficulté<br>3 = nous souhaitons arrêter</p>"
QUOTED = "\n".join(f"> {line}" if line else ">" for line in ORIGINAL.split("\n"))


def _message(plain: str | None, html: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Marie Dupont <Marie.Dupont@Example.FR>"
    msg["To"] = "Mentorat <mentorat+AbC123@example.org>"
    msg["Subject"] = "RE: Suivi de votre mentorat"
    msg["Message-ID"] = "<reply-1@example.fr>"
    msg["In-Reply-To"] = "<ours-1@mentorat.example.org>"
    msg["References"] = "<ours-0@mentorat.example.org> <ours-1@mentorat.example.org>"
    if plain is not None:
        msg.set_content(plain)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    else:
        msg.set_content(html or "", subtype="html")
    return msg.as_bytes()


GMAIL_PLAIN = (
    "Oui, on continue avec plaisir !\n\nLe lun. 3 mars 2025 à 10:02, Mentorat <\nmentorat+AbC123@example.org> a écrit\u202f:\n\n" + QUOTED + "\n"
)
GMAIL_HTML = (
    '<div dir="ltr">Oui, on continue avec plaisir !</div><br>'
    '<div class="gmail_quote gmail_quote_container"><div dir="ltr" class="gmail_attr">'
    "Le lun. 3 mars 2025 à 10:02, Mentorat &lt;mentorat@example.org&gt; a écrit&nbsp;:<br></div>"
    f'<blockquote class="gmail_quote" style="margin:0 0 0 .8ex">{ORIGINAL_HTML}</blockquote></div>'
)
OUTLOOK_DESKTOP_PLAIN = (
    "Tout se passe bien de notre côté, merci.\n\nCordialement,\nMarie Dupont\n\n"
    "De : Mentorat <mentorat+AbC123@example.org>\nEnvoyé : lundi 3 mars 2025 10:02\n"
    "À : Marie Dupont <marie.dupont@example.fr>\nObjet : Suivi de votre mentorat\n\n" + ORIGINAL + "\n"
)
OUTLOOK_DESKTOP_HTML = (
    "<html><head><style>p.MsoNormal{margin:0}</style></head><body><div class=WordSection1>"
    "<p class=MsoNormal>Tout se passe bien de notre côté, merci.<o:p></o:p></p>"
    "<p class=MsoNormal>&nbsp;</p><div><div style='border:none;border-top:solid #E1E1E1 1.0pt'>"
    "<p class=MsoNormal><b>De&nbsp;:</b> Mentorat &lt;mentorat@example.org&gt;<br>"
    "<b>Envoyé&nbsp;:</b> lundi 3 mars 2025 10:02<br><b>À&nbsp;:</b> Marie Dupont<br>"
    f"<b>Objet&nbsp;:</b> Suivi de votre mentorat</p></div></div>{ORIGINAL_HTML}</div></body></html>"
)
OUTLOOK_WEB_HTML = (
    '<div style="font-family:Aptos">2 - il ne répond plus depuis trois semaines</div>'
    '<div id="appendonsend"></div><hr style="display:inline-block;width:98%">'
    '<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri"><b>De :</b> Mentorat<br>'
    "<b>Envoyé :</b> lundi 3 mars 2025 10:02<br><b>À :</b> Marie<br><b>Objet :</b> Suivi</font></div>"
    f"<div>{ORIGINAL_HTML}</div>"
)
APPLE_PLAIN = (
    "On s'est appelés hier soir, premier rendez-vous fait.\n\n"
    "> Le 3 mars 2025 à 10:02, Mentorat <mentorat+AbC123@example.org> a écrit :\n>\n" + QUOTED + "\n"
)
APPLE_HTML = (
    "<html><body><div>On s'est appelés hier soir, premier rendez-vous fait.</div><div><br>"
    '<blockquote type="cite"><div>Le 3 mars 2025 à 10:02, Mentorat a écrit :</div>'
    f"{ORIGINAL_HTML}</blockquote></div></body></html>"
)
THUNDERBIRD_PLAIN = "Nous avons fait une visio mardi.\n\nLe 03/03/2025 à 10:02, Mentorat a écrit\u00a0:\n" + QUOTED + "\n"
THUNDERBIRD_HTML = (
    "<html><body><p>Nous avons fait une visio mardi.</p>"
    '<div class="moz-cite-prefix">Le 03/03/2025 à 10:02, Mentorat a écrit&nbsp;:<br></div>'
    f'<blockquote type="cite" cite="mid:ours-1@mentorat.example.org">{ORIGINAL_HTML}</blockquote>'
    "</body></html>"
)
IPHONE_PLAIN = "Oui\n\nEnvoyé de mon iPhone\n\n> Le 3 mars 2025 à 10:02, Mentorat <mentorat@example.org> a écrit :\n>\n" + QUOTED + "\n"
ANDROID_GMAIL_PLAIN = "Non merci\n\nLe lun. 3 mars 2025, 10:02, Mentorat <mentorat@example.org> a écrit :\n\n" + QUOTED + "\n"
SAMSUNG_PLAIN = (
    "1\n\n\n\nEnvoyé depuis mon appareil Galaxy\n\n\n-------- Message d'origine --------\n"
    "De : Mentorat <mentorat@example.org>\nDate : 03/03/2025 10:02 (GMT+01:00)\n"
    "À : marie.dupont@example.fr\nObjet : Suivi de votre mentorat\n\n" + ORIGINAL + "\n"
)
OUTLOOK_MOBILE_PLAIN = (
    "C'est fait\n\nTélécharger Outlook pour Android<https://aka.ms/AAb9ysg>\n"
    "________________________________\nDe : Mentorat <mentorat@example.org>\n"
    "Envoyé : lundi, mars 3, 2025 10:02 AM\nÀ : Marie\nObjet : Suivi\n\n" + ORIGINAL + "\n"
)

CLIENTS = [
    # id, plain, html, replied kind, expected text, expected intent
    ("gmail-plain", GMAIL_PLAIN, GMAIL_HTML, EmailKind.CHECKPOINT, "Oui, on continue avec plaisir !", Intent.CONTINUE),
    ("gmail-html-only", None, GMAIL_HTML, EmailKind.CHECKPOINT, "Oui, on continue avec plaisir !", Intent.CONTINUE),
    ("outlook-desktop", OUTLOOK_DESKTOP_PLAIN, OUTLOOK_DESKTOP_HTML, EmailKind.FOLLOWUP, "Tout se passe bien de notre côté, merci.", Intent.OK),
    ("outlook-desktop-html-only", None, OUTLOOK_DESKTOP_HTML, EmailKind.FOLLOWUP, "Tout se passe bien de notre côté, merci.", Intent.OK),
    ("outlook-web-html-only", None, OUTLOOK_WEB_HTML, EmailKind.FOLLOWUP, "2 - il ne répond plus depuis trois semaines", Intent.DIFFICULTY),
    ("apple-mail", APPLE_PLAIN, APPLE_HTML, EmailKind.FIRST_CONTACT_REMINDER, "On s'est appelés hier soir, premier rendez-vous fait.", Intent.MET),
    ("apple-mail-html-only", None, APPLE_HTML, None, "On s'est appelés hier soir, premier rendez-vous fait.", Intent.MET),
    ("thunderbird", THUNDERBIRD_PLAIN, THUNDERBIRD_HTML, None, "Nous avons fait une visio mardi.", Intent.MET),
    ("thunderbird-html-only", None, THUNDERBIRD_HTML, None, "Nous avons fait une visio mardi.", Intent.MET),
    ("iphone", IPHONE_PLAIN, None, EmailKind.CLOSURE, "Oui", Intent.AVAILABLE),
    ("android-gmail", ANDROID_GMAIL_PLAIN, None, EmailKind.CHECKPOINT, "Non merci", Intent.STOP),
    ("samsung", SAMSUNG_PLAIN, None, EmailKind.FOLLOWUP, "1", Intent.OK),
    ("outlook-mobile", OUTLOOK_MOBILE_PLAIN, None, EmailKind.FIRST_CONTACT_REMINDER, "C'est fait", Intent.MET),
]


@pytest.mark.parametrize(
    ("plain", "html", "replied_kind", "expected_text", "expected_intent"),
    [case[1:] for case in CLIENTS],
    ids=[case[0] for case in CLIENTS],
)
def test_french_client_reply(
    plain: str | None,
    html: str | None,
    replied_kind: EmailKind | None,
    expected_text: str,
    expected_intent: Intent,
    vocabulary: Vocabulary,
) -> None:
    parsed = parse_message(_message(plain, html))
    assert parsed.kind is MessageKind.REPLY
    assert parsed.text == expected_text
    for word in ("difficulté", "arrêter", "Bonjour Marie", "a écrit", "De :"):
        assert word not in parsed.text
    assert classify_intent(parsed.text, replied_kind=replied_kind, vocabulary=vocabulary) is expected_intent
    assert parsed.from_addr == "marie.dupont@example.fr"
    assert parsed.recipients == ("mentorat+AbC123@example.org",)
    assert parsed.references == ("<ours-1@mentorat.example.org>", "<ours-0@mentorat.example.org>")
    assert parsed.message_id == "<reply-1@example.fr>"


def test_quoted_words_alone_do_not_make_an_intent(vocabulary: Vocabulary) -> None:
    """A reply with nothing of its own above the quote reads as unknown, not stop."""
    parsed = parse_message(_message("Le 3 mars 2025 à 10:02, Mentorat <m@example.org> a écrit :\n" + QUOTED))
    assert parsed.text == ""
    assert parsed.kind is MessageKind.OTHER
    assert classify_intent(parsed.text, replied_kind=None, vocabulary=vocabulary) is Intent.UNKNOWN
