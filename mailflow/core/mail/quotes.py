"""Reply text -> what the person wrote: quoted original, attribution lines and signatures removed.

Theory of operation: each line is classified (text, quote, attribution, delimiter, header block,
signature) and one left-to-right pass keeps the text lines:

- a `>` quote block is dropped; text after it is kept (interleaved and bottom-posted replies);
- an attribution ("Le ... a écrit :", "On ... wrote:", up to 5 wrapped lines) followed by a
  `>` block is dropped with the block; followed by unprefixed text it starts the quoted
  original, so everything from it on is dropped;
- a delimiter (`-----Original Message-----`, `-------- Message d'origine --------`, forwarded
  message markers, Outlook's underscore rule), a mail header block (`De : / Envoyé : / À :`,
  `From: / Sent: / To:` in many languages), a signature delimiter (`-- `) or a mobile
  signature ("Envoyé de mon iPhone") ends the reply: everything from it on is dropped.
"""

from __future__ import annotations

import re
import unicodedata

_SPACES = dict.fromkeys(map(ord, "\u00a0\u202f\u2007\u2009\u2002\u2003\u3000"), " ")
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u200e\u200f\u2060\ufeff\u00ad"))

_QUOTE_RE = re.compile(r"^\s*>")
_EMAIL_RE = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")
_DATEISH_RE = re.compile(r"\d{1,4}[:/.\-]\d{1,2}|\d{4}|\b\d{1,2}\s+\w{3,}")

_VERBS = (
    r"wrote|a\s+[ée]crit|schrieb|schreef|het volgende geschreven|skrev|"
    r"napisa[łl](?:\(a\)|a)?|ha scritto|escribi[óo]|escreveu|kirjoitti|đã viết|написал[а]?|"
    r"hat geschrieben"
)
_VERB_AT_END_RE = re.compile(rf"(?:^|[\s,>)\"'])(?:{_VERBS})\s*:?\s*-*\s*$", re.I)
_VERB_RE = re.compile(rf"(?:^|[\s,>)\"'])(?:{_VERBS})(?:\s|$|:)", re.I)
_ATTR_START_RE = re.compile(r"^(?:-+\s*)?(?:on|le|am|op|w dniu|den|p[åa]|el|il|em|v[àa]o|dne)\s", re.I)
_ON_SENT_RE = re.compile(r"^On\s.*\bsent\s*:\s*$", re.I)
_ADDR_COLON_END_RE = re.compile(r"[\w.-]+@[\w.-]+\s*[>\])]\s*:$")
_DASHED_WROTE_RE = re.compile(rf"^-{{2,}}.*\b(?:{_VERBS})\s*-{{2,}}\s*$", re.I)

_DELIMITER_PHRASES = (
    "original message",
    "message d'origine",
    "message original",
    "forwarded message",
    "message transfere",
    "mensaje original",
    "mensagem original",
    "messaggio originale",
    "ursprungliche nachricht",
    "ursprungliche mitteilung",
    "weitergeleitete nachricht",
    "oorspronkelijk bericht",
    "doorgestuurd bericht",
    "oprindelig meddelelse",
    "ursprungligt meddelande",
    "opprinnelig melding",
    "wiadomosc oryginalna",
    "alkuperainen viesti",
    "reply message",
    "oprindelig besked",
    "originalmeddelande",
)
_FORWARD_LINE_RE = re.compile(
    r"^(?:begin forwarded message|d[ée]but du message (?:r[ée]exp[ée]di[ée]|transf[ée]r[ée])"
    r"|anfang der weitergeleiteten nachricht)\s*:?$",
    re.I,
)
_RULE_RE = re.compile(r"^\s*_{2,}\s*$")
_SIG_DELIM_RE = re.compile(r"^--\s*$")
_MOBILE_SIG_RE = re.compile(
    r"^(?:sent from my|sent from|sent with|sent via|sent using|sent on the go|"
    r"envoy[ée] de mon|envoy[ée] depuis|envoy[ée] [àa] partir de|envoy[ée] avec|envoy[ée] par|"
    r"get outlook for|t[ée]l[ée]charger outlook|obtenir outlook|"
    r"von meinem|gesendet von|enviado desde|enviado do meu|inviato da|verzonden met|"
    r"skickat fr[åa]n|sendt fra)\b",
    re.I,
)

_FROM_KEYS = {
    "from",
    "de",
    "von",
    "fra",
    "fran",
    "van",
    "od",
    "da",
    "от",
    "expediteur",
    "message du",
    "date",
    "datum",
    "sent",
    "envoye",
    "envoye le",
}
_HEADER_KEYS = _FROM_KEYS | {
    "to",
    "a",
    "an",
    "til",
    "till",
    "aan",
    "do",
    "para",
    "кому",
    "subject",
    "objet",
    "sujet",
    "betreff",
    "emne",
    "amne",
    "onderwerp",
    "temat",
    "oggetto",
    "asunto",
    "assunto",
    "тема",
    "cc",
    "copie",
    "copie a",
    "kopie",
    "gesendet",
    "sendt",
    "skickat",
    "verzonden",
    "wyslano",
    "inviato",
    "enviado",
    "отправлено",
    "reply-to",
    "repondre a",
    "destinataire",
    "inviato il",
    "on behalf of",
    "data",
    "dата",
}
_HEADER_LINE_RE = re.compile(r"^\s*\*?\s*([^\W\d_][^\W\d_ '.-]*(?:[ '.-][^\W\d_]+){0,2})\s*\*?\s*:")


def normalise(text: str) -> str:
    """Line endings to \\n, exotic spaces (U+00A0, U+202F...) to spaces, invisibles removed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.translate(_SPACES).translate(_INVISIBLE)


def _fold(text: str) -> str:
    """Lower case without accents, for keyword comparison."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).replace("’", "'")


def visible_reply(text: str) -> str:
    """The part of a reply body that its author wrote (whitespace-trimmed)."""
    lines = [line.rstrip() for line in normalise(text).split("\n")]
    kept: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if _is_quote(line):
            i = _skip_quote_block(lines, i)
            continue
        if _ends_reply(lines, i):
            break
        span = _attribution_span(lines, i)
        if span:
            after = _skip_blank(lines, i + span)
            if after < len(lines) and _is_quote(lines[after]):
                i = _skip_quote_block(lines, after)
                continue
            break  # unprefixed original follows the attribution
        kept.append(_cut_inline_attribution(line))
        i += 1
    return _tidy(kept)


_DECORATION_RE = re.compile(r"^\s*[-=_*~#]*\s*$")


def _tidy(lines: list[str]) -> str:
    out: list[str] = []
    for line in lines:
        if not line.strip() and out and not out[-1].strip():
            continue  # collapse runs of blank lines left by removed blocks
        out.append(line)
    while out and _DECORATION_RE.match(out[-1]):
        out.pop()  # separators and blank lines left above a removed block
    return "\n".join(out).strip()


def _is_quote(line: str) -> bool:
    return bool(_QUOTE_RE.match(line))


def _skip_blank(lines: list[str], i: int) -> int:
    while i < len(lines) and not lines[i].strip():
        i += 1
    return i


def _skip_quote_block(lines: list[str], i: int) -> int:
    """Skip `>` lines and the blank lines between/after them."""
    while i < len(lines):
        if _is_quote(lines[i]) or not lines[i].strip() or _is_wrapped_fragment(lines, i):
            i += 1
            continue
        break
    return i


def _is_wrapped_fragment(lines: list[str], i: int) -> bool:
    """A quoted line that the client wrapped onto an unprefixed line, between two `>` lines.

    Only a URL piece or the lower-case continuation of a long quoted line counts: a short
    answer between two quotes is an interleaved reply and is kept.
    """
    line = lines[i].strip()
    if not (0 < i < len(lines) - 1 and _is_quote(lines[i - 1]) and _is_quote(lines[i + 1])):
        return False
    previous = lines[i - 1].lstrip("> ")
    return (" " not in line and len(line) < 80) or (len(previous) >= 50 and line[:1].islower())


_VALEDICTION_RE = re.compile(
    r"^(?:regards|best regards|kind regards|warm regards|best wishes|sincerely|cheers|"
    r"cordialement|bien cordialement|tres cordialement|bien a (?:vous|toi)|salutations|"
    r"sinceres salutations|mit freundlichen grussen|viele grusse)[,.!]?$"
)


def _is_valediction_block(lines: list[str], i: int) -> bool:
    """ "Cordialement," then at most 4 short lines (a name, a title) to the end."""
    if not _VALEDICTION_RE.match(_fold(lines[i].strip())):
        return False
    rest: list[str] = []
    for j in range(i + 1, len(lines)):
        if _is_quote(lines[j]) or _ends_reply(lines, j, valediction=False) or _attribution_span(lines, j):
            break  # the signature ends where the quoted original starts
        if lines[j].strip():
            rest.append(lines[j].strip())
        if len(rest) > 4:
            return False
    return all(len(line) <= 50 for line in rest)


def _ends_reply(lines: list[str], i: int, *, valediction: bool = True) -> bool:
    """True when line i starts the quoted original or the signature (nothing after counts)."""
    stripped = lines[i].strip()
    if not stripped:
        return False
    return (
        _is_delimiter(stripped)
        or bool(_RULE_RE.match(stripped))
        or bool(_SIG_DELIM_RE.match(stripped))
        or _is_mobile_signature(stripped)
        or (valediction and _is_valediction_block(lines, i))
        or _is_header_block(lines, i)
    )


def _is_delimiter(stripped: str) -> bool:
    if _FORWARD_LINE_RE.match(stripped):
        return True
    core = _fold(stripped).strip("-_=*<>[]() ").strip()
    core = core.rstrip(":").strip()
    if core not in _DELIMITER_PHRASES:
        return False
    return stripped.startswith(("-", "_", "=", "*")) or len(stripped) <= 40


def _is_mobile_signature(stripped: str) -> bool:
    if not _MOBILE_SIG_RE.match(stripped):
        return False
    bare = re.sub(r"<[^>]*>|\([^)]*\)|https?://\S+", "", stripped).strip()
    return len(bare) <= 60 and not re.search(r"[,;!?]|\.\s+\w", bare)


def _header_key(line: str) -> str | None:
    match = _HEADER_LINE_RE.match(line)
    if not match:
        return None
    key = _fold(match.group(1)).strip()
    return key if key in _HEADER_KEYS else None


def _is_header_block(lines: list[str], i: int) -> bool:
    """`From:`/`De :` (or `Date:`) followed within a few lines by another header line."""
    first = _header_key(lines[i])
    if first not in _FROM_KEYS:
        return False
    seen = {first}
    for j in range(i + 1, min(len(lines), i + 7)):
        key = _header_key(lines[j])
        if key and key not in seen:
            return True
    return False


def _attribution_span(lines: list[str], i: int) -> int:
    """Number of lines (1-5) forming an attribution starting at line i, or 0."""
    first = lines[i].strip()
    if not first:
        return 0
    # A wrapped attribution starts like one ("Le ...", "On ...") or carries its date/address.
    may_wrap = bool(_ATTR_START_RE.match(first) or _EMAIL_RE.search(first) or _DATEISH_RE.search(first))
    joined = ""
    found = 0
    for n in range(1, 6):
        if i + n > len(lines) or (n > 1 and not may_wrap):
            break
        piece = lines[i + n - 1].strip()
        if n > 1 and not piece:
            break  # a client wraps an attribution over lines, never over a blank line
        if n > 1 and _is_quote(piece) and not _is_wrapped_attribution_end(piece):
            break
        joined = f"{joined} {piece}".strip() if piece else joined
        if len(joined) > 400:
            break
        if piece and _is_attribution(joined, lines, i + n):
            found = n  # keep looking: the longest wrapped form wins
    return found


def _is_wrapped_attribution_end(piece: str) -> bool:
    """`>:` or `> wrote:` on its own line: the end of an address wrapped by the client."""
    rest = piece.lstrip("> ").lower()
    return rest in {"", ":"} or bool(_VERB_AT_END_RE.match(" " + rest))


def _is_attribution(joined: str, lines: list[str], after: int) -> bool:
    text = " ".join(joined.split())
    if _DASHED_WROTE_RE.match(text) or _ON_SENT_RE.match(text):
        return True
    anchored = bool(_EMAIL_RE.search(text) or _DATEISH_RE.search(text))
    if _VERB_AT_END_RE.search(text):
        return anchored or (bool(_ATTR_START_RE.match(text)) and len(text) < 200)
    if _VERB_RE.search(text) and _ATTR_START_RE.match(text):
        # "Am <date> schrieb X <x@y>:", "Op <date> schreef X:"
        return anchored and text.endswith(":")
    # No verb ("26.06.2014, 14:41, "Alex" <a@b.c>:"): an address and a date; "<addr>:" at
    # the end is distinctive enough, other endings need a quote block after them.
    if _EMAIL_RE.search(text) and _DATEISH_RE.search(text) and _ADDR_COLON_END_RE.search(text):
        return True
    if not (_EMAIL_RE.search(text) and _DATEISH_RE.search(text) and text.endswith((":", ">"))):
        return False
    nxt = _skip_blank(lines, after)
    return nxt >= len(lines) or _is_quote(lines[nxt])


_INLINE_ATTR_RE = re.compile(rf"\s*-{{2,}}\s*On\s.*\b(?:{_VERBS})\s*:\s*$", re.I)


def _cut_inline_attribution(line: str) -> str:
    """`text--- On <date>, x wrote:` on one line: keep the text before the splitter."""
    match = _INLINE_ATTR_RE.search(line)
    return line[: match.start()] if match and match.start() > 0 else line
