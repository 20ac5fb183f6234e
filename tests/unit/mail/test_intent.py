"""Intent table: codes, phrases, negations, reply context, support_needed escalation."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailflow.core.mail.intent import Vocabulary, classify_intent
from mailflow.core.model import EmailKind, Intent
from mailflow.errors import ConfigError
from mailflow.vocabulary import load_vocabulary

It = Intent
K = EmailKind

CASES: list[tuple[str, EmailKind | None, Intent]] = [
    # quick codes (our templates put them at the top)
    ("1", K.FOLLOWUP, It.OK),
    ("2", K.FOLLOWUP, It.DIFFICULTY),
    ("3", None, It.STOP),
    ("1.", None, It.OK),
    ("2 - on n'arrive pas à se caler un créneau", K.FOLLOWUP, It.DIFFICULTY),
    ("3) nous souhaitons arrêter", None, It.STOP),
    ("1\n\nTout va bien, merci !", K.FOLLOWUP, It.OK),
    ("1 - on s'est appelés hier", K.FOLLOWUP, It.MET),
    ("2 fois par mois on se voit, tout va bien", K.FOLLOWUP, It.OK),  # "2 fois" is no code
    # phrases (French)
    ("Tout se passe très bien, merci", K.FOLLOWUP, It.OK),
    ("Pas de souci, tout roule", K.FOLLOWUP, It.OK),
    ("Nous rencontrons une difficulté", K.FOLLOWUP, It.DIFFICULTY),
    ("Mon mentoré ne répond plus à mes messages", K.FOLLOWUP, It.DIFFICULTY),
    ("Je n'ai pas de nouvelles de ma mentore depuis un mois", K.FOLLOWUP, It.DIFFICULTY),
    ("Je n'ai pas le temps en ce moment", K.FOLLOWUP, It.DIFFICULTY),
    ("Nous souhaitons arrêter le mentorat", K.FOLLOWUP, It.STOP),
    ("J'arrête, désolé", None, It.STOP),
    ("Je ne veux plus continuer", K.CHECKPOINT, It.STOP),
    ("On a arrêté une date pour la prochaine visio", K.FOLLOWUP, It.UNKNOWN),
    ("On s'est appelés hier soir", K.FIRST_CONTACT_REMINDER, It.MET),
    ("Nous avons fait une visio mardi", None, It.MET),
    ("Premier rendez-vous fait !", None, It.MET),
    ("Nous nous sommes rencontrés au café", None, It.MET),
    ("C'est fait", K.FIRST_CONTACT_REMINDER, It.MET),
    ("Nous sommes en contact depuis lundi", K.FIRST_CONTACT_REMINDER, It.MET),
    ("On continue !", K.CHECKPOINT, It.CONTINUE),
    ("Je suis disponible pour un nouveau jeune", K.CLOSURE, It.AVAILABLE),
    ("Pas disponible pour le moment", K.CLOSURE, It.UNAVAILABLE),
    ("Je ne suis plus disponible", K.CLOSURE, It.UNAVAILABLE),
    # English
    ("All good, thanks", None, It.OK),
    ("We met last week", None, It.MET),
    ("We had our first call yesterday", None, It.MET),
    ("I'd like to stop the mentoring", None, It.STOP),
    ("My mentee is not responding", None, It.DIFFICULTY),
    # negations
    ("Pas de problème", K.FOLLOWUP, It.OK),
    ("Aucune difficulté pour l'instant", K.FOLLOWUP, It.UNKNOWN),
    ("Je ne souhaite pas arrêter", K.CHECKPOINT, It.UNKNOWN),
    ("Je ne souhaite pas arrêter, on continue", K.CHECKPOINT, It.CONTINUE),
    ("Je n'ai pas encore rencontré mon mentor", K.FIRST_CONTACT_REMINDER, It.UNKNOWN),
    ("Nous n'avons pas encore fait de visio", K.FIRST_CONTACT_REMINDER, It.UNKNOWN),
    ("Pas de problème pour continuer", K.CHECKPOINT, It.CONTINUE),
    ("No problem at all", None, It.OK),
    ("I don't want to stop", K.CHECKPOINT, It.UNKNOWN),
    # context of the email answered
    ("oui", K.CHECKPOINT, It.CONTINUE),
    ("Oui !", K.CHECKPOINT, It.CONTINUE),
    ("d'accord", K.CHECKPOINT, It.CONTINUE),
    ("yes", K.CHECKPOINT, It.CONTINUE),
    ("non", K.CHECKPOINT, It.STOP),
    ("Non merci", K.CHECKPOINT, It.STOP),
    ("oui", K.CLOSURE, It.AVAILABLE),
    ("Oui avec plaisir", K.CLOSURE, It.AVAILABLE),
    ("non", K.CLOSURE, It.UNAVAILABLE),
    ("oui", None, It.OK),
    ("non", None, It.UNKNOWN),
    ("Tout va bien", K.CHECKPOINT, It.CONTINUE),
    # precedence: stop > difficulty > met > continue > ok
    ("On s'est vus mais c'est compliqué, il ne vient pas aux rendez-vous", None, It.DIFFICULTY),
    ("Tout va bien mais nous souhaitons arrêter", None, It.STOP),
    ("1 mais en fait on veut arrêter", None, It.STOP),
    # support_needed wins over everything, negation or not
    ("Je ne vais pas bien en ce moment", None, It.SUPPORT_NEEDED),
    ("J'ai besoin d'aide urgente", None, It.SUPPORT_NEEDED),
    ("Ma mentorée m'a parlé de harcèlement dans son stage", None, It.SUPPORT_NEEDED),
    ("1 mais je me sens très mal, idées noires", K.FOLLOWUP, It.SUPPORT_NEEDED),
    ("Je veux arrêter, je suis en dépression", K.CHECKPOINT, It.SUPPORT_NEEDED),
    ("Elle a été mise dehors par ses parents", None, It.SUPPORT_NEEDED),
    ("Pas de harcèlement je pense, mais je préfère vous le dire", None, It.SUPPORT_NEEDED),
    ("He talked about suicide", None, It.SUPPORT_NEEDED),
    ("J'ai des pensées suicidaires", None, It.SUPPORT_NEEDED),
    # empty / unrecognised
    ("", None, It.UNKNOWN),
    ("   \n ", K.FOLLOWUP, It.UNKNOWN),
    ("Pouvez-vous me rappeler le nom de mon référent ?", None, It.UNKNOWN),
]


@pytest.mark.parametrize(("text", "replied_kind", "expected"), CASES)
def test_intent_table(text: str, replied_kind: EmailKind | None, expected: Intent, vocabulary: Vocabulary) -> None:
    assert classify_intent(text, replied_kind=replied_kind, vocabulary=vocabulary) is expected


@pytest.mark.parametrize("text", ["ARRÊTER", "arreter", "Arrêter", "arrêter"])
def test_accent_and_case_insensitive(text: str, vocabulary: Vocabulary) -> None:
    assert classify_intent(text, replied_kind=None, vocabulary=vocabulary) is Intent.STOP


def test_typographic_apostrophe(vocabulary: Vocabulary) -> None:
    text = "Je n’ai pas de nouvelles depuis deux semaines"
    assert classify_intent(text, replied_kind=None, vocabulary=vocabulary) is Intent.DIFFICULTY


def test_custom_vocabulary_file(tmp_path: Path) -> None:
    path = tmp_path / "vocab.toml"
    path.write_text(
        '[codes]\n"9" = "stop"\n[intents]\nmet = ["rencontr\\\\w+"]\n[negation]\nwords = ["pas"]\n',
        encoding="utf-8",
    )
    vocab = load_vocabulary(path)
    assert classify_intent("9", replied_kind=None, vocabulary=vocab) is Intent.STOP
    assert classify_intent("rencontrés !", replied_kind=None, vocabulary=vocab) is Intent.MET
    assert classify_intent("pas rencontrés", replied_kind=None, vocabulary=vocab) is Intent.UNKNOWN


@pytest.mark.parametrize("content", ['[intents]\nnope = ["x"]\n', "[intents\n", '[context.nope]\nyes = "ok"\n'])
def test_invalid_vocabulary_is_a_config_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError):
        load_vocabulary(path)


def test_missing_vocabulary_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_vocabulary(tmp_path / "absent.toml")


def test_invalid_regex_is_matched_literally(vocabulary: Vocabulary) -> None:
    vocab = Vocabulary(phrases={Intent.OK: ("ça (va",)})
    assert classify_intent("ça (va", replied_kind=None, vocabulary=vocab) is Intent.OK
