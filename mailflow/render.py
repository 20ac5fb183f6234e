"""Render programme emails from templates/emails (one Jinja file per kind x language) to the bytes to send.

Each email has ONE source of truth: `templates/emails/<lang>/<kind>[.<role>].j2`. It extends
`layout` and builds its body from `components` macros; the renderer renders it twice, with
`layout`/`components` pointing at the text versions (autoescape off) and then at the HTML
versions (autoescape on), so both parts always say the same thing. See docs/templates.md.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import secrets
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from markupsafe import Markup, escape

import mailflow
from mailflow.core.addresses import (
    check_address,
    check_message_id,
    clean_display_name,
    clean_header_text,
    is_safe_message_id,
    split_address,
)
from mailflow.core.mail import build
from mailflow.core.model import EmailKind, Role, Track
from mailflow.errors import MailflowError

LANGUAGES = ("fr", "en")

# which recipients each kind is written for (check_templates renders every combination)
KIND_ROLES: dict[EmailKind, tuple[Role, ...]] = {
    EmailKind.INTRODUCTION: (Role.MENTOR, Role.MENTEE),
    EmailKind.FIRST_CONTACT_REMINDER: (Role.MENTEE,),
    EmailKind.NO_CONTACT_NOTICE: (Role.MENTOR,),
    EmailKind.FOLLOWUP: (Role.MENTOR, Role.MENTEE),
    EmailKind.FOLLOWUP_REMINDER: (Role.MENTOR, Role.MENTEE),
    EmailKind.CHECKPOINT: (Role.MENTOR, Role.MENTEE),
    EmailKind.CLOSURE: (Role.MENTOR, Role.MENTEE),
    EmailKind.DIGEST: (Role.REFERENT,),
    EmailKind.URGENT_ALERT: (Role.REFERENT,),
}

# words that must never appear in a subject (subjects show in lock screens and shared inboxes)
SENSITIVE_SUBJECT_WORDS = (
    "difficult", "santé", "health", "psy", "détresse", "distress", "suicid", "arrêt", "stop",
    "urgence", "malad", "ill", "soutien", "support",
)  # fmt: skip

TRACK_LABELS = {
    "fr": {
        Track.ORIENTATION: "Construction du projet d'orientation",
        Track.STAGE_ALTERNANCE: "Recherche de stage ou d'alternance",
        Track.PARCOURSUP: "Inscription sur Parcoursup",
    },
    "en": {
        Track.ORIENTATION: "Building a study and career plan",
        Track.STAGE_ALTERNANCE: "Finding an internship or work-study placement",
        Track.PARCOURSUP: "Applying through Parcoursup",
    },
}
ROLE_LABELS = {
    "fr": {Role.MENTOR: "mentor", Role.MENTEE: "mentoré(e)", Role.REFERENT: "référent(e)"},
    "en": {Role.MENTOR: "mentor", Role.MENTEE: "mentee", Role.REFERENT: "referent"},
}
_MONTHS = {
    "fr": "janvier février mars avril mai juin juillet août septembre octobre novembre décembre",
    "en": "January February March April May June July August September October November December",
}
DEFAULT_COMMANDS_HELP = (
    "appel P12 fait: joint, tout va bien",
    "clôture P7",
    "pause P3 jusqu'au 01/09",
)


class RenderError(MailflowError):
    """An email template could not be rendered: fix the template or its context."""


# ---- the template context: plain frozen data ----


@dataclass(frozen=True)
class ProgrammeInfo:
    name: str
    team_email: str
    survey_url: str
    review_guide_url: str
    team_phone: str = ""
    website: str = ""


@dataclass(frozen=True)
class RecipientInfo:
    first_name: str
    last_name: str
    role: Role
    language: str = "fr"


@dataclass(frozen=True)
class PairInfo:
    ref: str
    track: Track
    matched_on: date


@dataclass(frozen=True)
class MentorInfo:
    first_name: str
    job: str
    sector: str


@dataclass(frozen=True)
class MenteeInfo:
    first_name: str
    email: str
    sector: str


@dataclass(frozen=True)
class ReferentInfo:
    name: str
    email: str


@dataclass(frozen=True)
class AlertInfo:
    """What an urgent_alert says: who wrote and when -- never what they wrote."""

    pair_ref: str
    who_role: Role
    who_first_name: str
    received_at: datetime  # tz-aware


@dataclass(frozen=True)
class DigestSection:
    title: str
    items: tuple[str, ...] = ()


@dataclass(frozen=True)
class DigestInfo:
    date: date
    sections: tuple[DigestSection, ...] = ()
    counts: Mapping[str, int] = field(default_factory=dict)
    commands_help: tuple[str, ...] = DEFAULT_COMMANDS_HELP


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


# ---- filters ----

_WS = re.compile(r"[ \t\r\n\f\v]+")
_FR_NBSP = [
    (" :", "\u00a0:"), (" ;", "\u202f;"), (" ?", "\u202f?"), (" !", "\u202f!"), ("« ", "«\u00a0"), (" »", "\u00a0»"),
]  # fmt: skip


def _squash(value: Any) -> Any:
    """Collapse runs of whitespace (keeps Markup as Markup) and glue French punctuation."""
    text = _WS.sub(" ", str(value)).strip()
    for old, new in _FR_NBSP:
        text = text.replace(old, new)
    return Markup(text) if isinstance(value, Markup) else text  # noqa: S704 (already escaped; whitespace only)


_SINGLE_SPACED = re.compile(r"[^ \t\n\r\f\v]+(?: [^ \t\n\r\f\v]+)*")


def _wrap(value: str, width: int = 76, indent: str = "", first: str | None = None) -> str:
    """Wrap plain text; never breaks a long word (URLs and addresses stay clickable).

    Text that `squash` has made single-spaced (every call in our templates) is wrapped word by
    word with textwrap's exact greedy rule, several times faster; anything else goes to textwrap.
    """
    text = str(value)
    if _SINGLE_SPACED.fullmatch(text):
        return _greedy_fill(text.split(" "), width, indent if first is None else first, indent)
    return textwrap.fill(
        str(value),
        width=width,
        initial_indent=indent if first is None else first,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )


def _greedy_fill(words: list[str], width: int, first: str, indent: str) -> str:
    """textwrap.fill(break_long_words=False, break_on_hyphens=False) of single-spaced words."""
    lines: list[str] = []
    line: list[str] = []
    room = width - len(first)
    used = -1
    for word in words:
        if line and used + 1 + len(word) > room:
            lines.append((indent if lines else first) + " ".join(line))
            line, used, room = [], -1, width - len(indent)
        line.append(word)
        used += 1 + len(word)
    lines.append((indent if lines else first) + " ".join(line))
    return "\n".join(lines)


# ---- paragraph blocks: `{% filter p %}...{% endfilter %}` (a Jinja macro with `caller` costs twice as much) ----

_P_STYLE = "margin:0 0 16px 0;"
_NOTE_STYLE = "margin:0 0 16px 0;font-size:14px;color:#555555;"
_SIGN_STYLE = "margin:24px 0 0 0;"


@functools.lru_cache(maxsize=1024)  # most paragraphs are the same text in every email of a kind
def _text_p(value: str) -> str:
    """A paragraph of the text part: squashed, wrapped at 76, set apart by blank lines."""
    return f"\n\n{_wrap(_squash(str(value)))}\n\n\n"


def _text_sign(value: str) -> str:
    """The signature of the text part: one squashed line per non-blank line."""
    return "\n\n" + "".join(f"{_squash(line)}\n" for line in value.split("\n") if line.strip())


def _html_block(style: str) -> Any:
    opening = Markup(f'<p style="{style}">')  # noqa: S704 (a constant of this module)

    @functools.lru_cache(maxsize=1024)
    def cached(escaped: str) -> Markup:
        return opening + _squash(Markup(escaped)) + Markup("</p>\n")  # noqa: S704 (escaped just below)

    def block(value: Any) -> Markup:  # the block's body: Markup, escaped by autoescape (escape() is a no-op then)
        return cached(str(escape(value)))

    return block


def _html_sign(value: Any) -> Markup:
    lines = [_squash(line) for line in escape(value).split("\n") if line.strip()]
    return Markup(f'<p style="{_SIGN_STYLE}">') + Markup("<br>").join(lines) + Markup("</p>\n")  # noqa: S704 (constants)


BLOCK_FILTERS = {
    "text": {"p": _text_p, "note": _text_p, "sign": _text_sign},
    "html": {"p": _html_block(_P_STYLE), "note": _html_block(_NOTE_STYLE), "sign": _html_sign},
}


def _nobreak(value: Any) -> Any:
    """Keep a short value (a phone number) on one line."""
    text = str(value).replace(" ", "\u00a0")
    return Markup(text) if isinstance(value, Markup) else text  # noqa: S704 (already escaped; spaces only)


def _lang(lang: str) -> str:
    return lang if lang in LANGUAGES else "fr"


def _track_label(track: Any, lang: str) -> str:
    return TRACK_LABELS[_lang(lang)][Track(str(track))]


def _role_label(role: Any, lang: str) -> str:
    return ROLE_LABELS[_lang(lang)][Role(str(role))]


def _long_date(value: date, lang: str) -> str:
    month = _MONTHS[_lang(lang)].split()[value.month - 1]
    if _lang(lang) == "en":
        return f"{value.day} {month} {value.year}"
    return f"{'1er' if value.day == 1 else value.day} {month} {value.year}"


def _short_date(value: date, lang: str) -> str:
    return value.strftime("%d/%m/%Y")


def _url(value: str) -> str:
    """Only http(s) and mailto links go into emails (config values, never participant data)."""
    text = str(value).strip()
    if not re.match(r"(https?://|mailto:)[^\s<>\"']+\Z", text):
        raise RenderError(f"not an http(s) or mailto URL: {text!r}")
    return text


# ---- rendering ----


def default_templates_dir() -> Path:
    root = Path(mailflow.__file__).parent
    repo = root.parent / "templates" / "emails"
    return repo if repo.is_dir() else root / "_templates" / "emails"


def _get(obj: Any, name: str) -> Any:
    return obj[name] if isinstance(obj, Mapping) else getattr(obj, name)


class _SharedBytecodeCache(jinja2.BytecodeCache):
    """Compiled templates shared by every Renderer of the process, keyed by name and source checksum.

    Each outbox pass builds a Renderer; without this, every pass recompiles every template
    (~10 ms each), which dominates `run --once` loops and the demo's accelerated calendar.
    """

    def __init__(self) -> None:
        self._store: dict[str, bytes] = {}

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        data = self._store.get(bucket.key)
        if data is not None:
            bucket.bytecode_from_string(data)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        self._store[bucket.key] = bucket.bytecode_to_string()


_BYTECODE = {"text": _SharedBytecodeCache(), "html": _SharedBytecodeCache()}  # one per mode: autoescape differs


class Renderer:
    def __init__(self, templates_dir: Path | None = None, timezone_name: str = "Europe/Paris") -> None:
        self.templates_dir = Path(templates_dir) if templates_dir else default_templates_dir()
        self.tz = ZoneInfo(timezone_name)
        self._text = self._env(autoescape=False, mode="text")
        self._html = self._env(autoescape=True, mode="html")
        self._names: dict[tuple[str, str, str], str] = {}  # template lookups (a stat each) made once

    def _env(self, *, autoescape: bool, mode: str) -> jinja2.Environment:
        # the text part is plain text: autoescape there would corrupt names like "R&D"
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(self.templates_dir),
            autoescape=autoescape,  # noqa: S701
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,  # templates are part of the release: no stat of every file on every render
            bytecode_cache=_BYTECODE[mode],
        )
        env.globals.update(layout=f"_layout/{mode}.j2", components=f"_layout/{mode}_components.j2")
        env.filters.update(BLOCK_FILTERS[mode])
        env.filters.update(
            squash=_squash,
            nobreak=_nobreak,
            wrap=_wrap,
            track_label=_track_label,
            role_label=_role_label,
            long_date=_long_date,
            short_date=_short_date,
            url=_url,
            when=self._when,
        )
        return env

    def _when(self, value: datetime, lang: str) -> str:
        local = value.astimezone(self.tz)
        sep = "at" if _lang(lang) == "en" else "à"
        return f"{_long_date(local.date(), lang)} {sep} {local:%H:%M}"

    def template_name(self, kind: EmailKind | str, language: str, role: Role | str) -> str:
        """`<lang>/<kind>.<role>.j2` when it exists, else `<lang>/<kind>.j2`."""
        lang, kind = _lang(language), EmailKind(kind).value
        key = (lang, kind, Role(role).value)
        name = self._names.get(key)
        if name is None:
            specific = f"{lang}/{kind}.{key[2]}.j2"
            name = self._names[key] = specific if (self.templates_dir / specific).is_file() else f"{lang}/{kind}.j2"
        return name

    def render(self, kind: EmailKind, language: str, context: Mapping[str, Any]) -> RenderedEmail:
        lang = _lang(language)
        role = _get(context["recipient"], "role")
        name = self.template_name(kind, lang, role)
        variables = {**context, "lang": lang, "kind": EmailKind(kind).value}
        try:
            text_tmpl = self._text.get_template(name)
            context = text_tmpl.new_context(variables)  # one context for the subject block and the text part
            subject = "".join(text_tmpl.blocks["subject"](context))
            text = "".join(text_tmpl.root_render_func(context))
            html = self._html.get_template(name).render(variables)
        except (jinja2.TemplateError, KeyError, ValueError, AttributeError) as exc:
            raise RenderError(f"{name}: {exc}") from exc
        return RenderedEmail(subject=clean_header_text(subject), text=_tidy_text(text), html=html.strip() + "\n")


def _tidy_text(text: str) -> str:
    lines = [line.rstrip() for line in text.splitlines()]
    tidy = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")
    return tidy.replace("\n--\n", "\n-- \n") + "\n"  # the signature separator keeps its space


# ---- the message bytes ----


def make_message_id(domain: str) -> str:
    split_address(f"x@{domain}")  # validates the domain
    return f"<{secrets.token_hex(16)}@{domain}>"


def build_message_bytes(
    rendered: RenderedEmail,
    *,
    kind: EmailKind,
    from_name: str,
    from_address: str,
    to_name: str,
    to_address: str,
    reply_to: str | None,
    message_id: str,
    date: datetime,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
) -> bytes:
    """One multipart/alternative email (text, then HTML) to exactly one recipient, as the bytes to send.

    Every header value goes through mailflow.core.addresses: names and subject are neutralised,
    addresses and our Message-ID are checked (UnsafeHeaderError). In-Reply-To/References come
    from inbound mail: ids that are not clean `<x@y>` are dropped rather than failing the send.
    The bytes are written by mailflow.core.mail.build (why, and its safety rules: there).
    """
    if date.tzinfo is None:
        raise ValueError("build_message_bytes needs a tz-aware date")
    headers = [
        f"Message-ID: {check_message_id(message_id)}",
        f"Date: {format_datetime(date)}",
        build.address_header("From", clean_display_name(from_name), _addr_spec(from_address)),
        build.address_header("To", clean_display_name(to_name), _addr_spec(to_address)),
    ]
    if reply_to:
        headers.append(build.address_header("Reply-To", clean_display_name(from_name), _addr_spec(reply_to)))
    headers += [
        build.text_header("Subject", clean_header_text(rendered.subject)),
        "Auto-Submitted: auto-generated",
        "X-Auto-Response-Suppress: All",
        f"X-Mailflow-Kind: {EmailKind(kind).value}",
    ]
    refs = [r for r in references if is_safe_message_id(r)]
    if in_reply_to and is_safe_message_id(in_reply_to):
        headers.append(f"In-Reply-To: {in_reply_to}")
        refs = refs if in_reply_to in refs else [*refs, in_reply_to]
    if refs:
        headers.append(build.header("References", refs[-10:]))
    return build.alternative(headers, rendered.text, rendered.html)


def _addr_spec(addr_spec: str) -> str:
    local, domain = split_address(check_address(addr_spec))
    return f"{local}@{domain}"


# ---- samples and checks (for `templates check` / `templates preview` and tests) ----


def sample_context(kind: EmailKind, language: str, role: Role) -> dict[str, Any]:
    """A made-up pair, complete for every kind; the recipient is the person in `role`."""
    lang = _lang(language)
    matched = date(2025, 3, 3)
    people = {
        Role.MENTOR: RecipientInfo("Claire", "Dumas", Role.MENTOR, lang),
        Role.MENTEE: RecipientInfo("Yanis", "Benali", Role.MENTEE, lang),
        Role.REFERENT: RecipientInfo("Sophie", "Martin", Role.REFERENT, lang),
    }
    digest_sections = (
        DigestSection("Appels à passer" if lang == "fr" else "Calls to make", ("P12 — mentoré(e), sans réponse depuis 7 jours",)),
        DigestSection("Nouvelles réponses" if lang == "fr" else "New replies", ("P7 — mentor : tout va bien",)),
    )  # fmt: skip
    return {
        "programme": ProgrammeInfo(
            name="Programme de mentorat",
            team_email="mentorat@example.org",
            survey_url="https://example.org/questionnaire",
            review_guide_url="https://example.org/guide-bilan.pdf",
            team_phone="01 23 45 67 89",
            website="https://example.org",
        ),
        "recipient": people[Role(role)],
        "pair": PairInfo(ref="P12", track=Track.STAGE_ALTERNANCE, matched_on=matched),
        "mentor": MentorInfo(first_name="Claire", job="Cheffe de projet informatique", sector="Numérique"),
        "mentee": MenteeInfo(first_name="Yanis", email="yanis.b@example.net", sector="Numérique"),
        "referent": ReferentInfo(name="Sophie Martin", email="sophie.martin@example.org"),
        "alert": AlertInfo("P12", Role.MENTEE, "Yanis", datetime(2025, 4, 2, 14, 5, tzinfo=UTC)),
        "digest": DigestInfo(date=matched + timedelta(days=30), sections=digest_sections, counts={"binômes actifs": 14}),
    }


def check_templates(renderer: Renderer) -> list[str]:
    """Problems with the templates; [] when every kind renders in every language for every role."""
    problems: list[str] = []
    for kind, roles in KIND_ROLES.items():
        for lang in LANGUAGES:
            for role in roles:
                contexts = [sample_context(kind, lang, role)]
                if kind is EmailKind.DIGEST:  # the empty digest is a different branch
                    empty = dataclasses.replace(contexts[0]["digest"], sections=(), counts={})
                    contexts.append({**contexts[0], "digest": empty})
                for context in contexts:
                    problems += _check_one(renderer, kind, lang, role, context)
    return problems


def _check_one(renderer: Renderer, kind: EmailKind, lang: str, role: Role, ctx: dict[str, Any]) -> list[str]:
    where = f"{renderer.template_name(kind, lang, role)} ({role})"
    try:
        rendered = renderer.render(kind, lang, ctx)
    except RenderError as exc:
        return [f"{where}: {exc}"]
    problems = []
    if not rendered.subject:
        problems.append(f"{where}: empty subject")
    if len(rendered.text) < 80:
        problems.append(f"{where}: text part is (nearly) empty")
    if "<html" not in rendered.html or "</html>" not in rendered.html:
        problems.append(f"{where}: HTML part is not a document")
    if re.search(r"</?(p|div|table|a|strong|br)\b", rendered.text):
        problems.append(f"{where}: HTML tags in the text part")
    lowered = rendered.subject.lower()
    for word in SENSITIVE_SUBJECT_WORDS:
        if re.search(rf"\b{re.escape(word)}", lowered):
            problems.append(f"{where}: subject contains a sensitive word ({word!r})")
    return problems
