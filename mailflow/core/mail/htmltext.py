"""HTML reply -> plain text: drop the clients' quote containers first, then render with inscriptis.

Mail clients wrap the quoted original in recognisable containers; removing them in the tree is
far more reliable than finding the quote in the rendered text. For Outlook's reply header
(`#divRplyFwdMsg`, `#appendonsend`) and Hotmail's `hr#stopSpelling`, the original follows the
marker as siblings, so everything after the marker goes too.
"""

from __future__ import annotations

from inscriptis import Inscriptis  # type: ignore[import-untyped]
from inscriptis.model.config import ParserConfig  # type: ignore[import-untyped]
from lxml import etree  # type: ignore[import-untyped]
from lxml.html import HtmlElement, document_fromstring  # type: ignore[import-untyped]

_JUNK = "//script | //style | //head | //title | //noscript | //img | //comment()"

# Containers holding only the quoted original (or a signature): removed with their content.
_QUOTES = " | ".join(
    (
        "//blockquote",
        "//*[contains(concat(' ', normalize-space(@class), ' '), ' gmail_quote ')]",
        "//*[contains(@class, 'gmail_quote_container')]",
        "//*[contains(@class, 'gmail_attr')]",
        "//*[contains(@class, 'gmail_signature')]",
        "//*[@data-smartmail='gmail_signature']",
        "//*[contains(@class, 'moz-cite-prefix')]",
        "//*[contains(@class, 'moz-signature')]",
        "//*[contains(@class, 'yahoo_quoted')]",
        "//*[@id='AppleMailSignature']",
        "//*[@id='Signature']",
        "//*[@id='ms-outlook-mobile-signature']",
    )
)

# Markers after which everything in document order is the quoted original.
_CUT_AFTER = " | ".join(
    (
        "//*[@id='divRplyFwdMsg']",
        "//*[@id='appendonsend']",
        "//hr[@id='stopSpelling']",
        "//*[@id='OLK_SRC_BODY_SECTION']",
        "//*[contains(@class, 'OutlookMessageHeader')]",
        "//*[@id='mail-editor-reference-message-container']",
    )
)

_CONFIG = ParserConfig(display_images=False, display_links=False, display_anchors=False)


def html_to_text(html: str) -> str:
    """Visible text of an HTML reply, quote containers removed; "" when nothing is readable."""
    tree = _parse(html)
    if tree is None:
        return ""
    _remove(tree, _JUNK)
    cut = tree.xpath(_CUT_AFTER)
    if cut:
        _cut_from(cut[0])
    _remove(tree, _QUOTES)
    for rule in tree.xpath("//hr"):
        rule.tag = "div"  # a line break, so a header block after it starts its own line
        rule.attrib.clear()
    try:
        text = str(Inscriptis(tree, _CONFIG).get_text())
    except Exception:  # inscriptis on a pathological tree: fall back to bare text
        text = str(tree.text_content())
    return "\n".join(line.strip() for line in text.splitlines())


def _parse(html: str) -> HtmlElement | None:
    text = html.strip()
    if not text:
        return None
    if text.startswith("<?xml"):
        text = text.split("?>", 1)[-1]
    try:
        tree = document_fromstring(text)
    except (etree.ParserError, ValueError):
        try:
            tree = document_fromstring("<pre>" + text + "</pre>")
        except Exception:
            return None
    except Exception:
        return None
    return tree


def _remove(tree: HtmlElement, xpath: str) -> None:
    for node in tree.xpath(xpath):
        parent = node.getparent()
        if parent is None:
            continue
        _drop_keep_tail(node, parent)


def _drop_keep_tail(node: etree._Element, parent: etree._Element) -> None:
    tail = node.tail
    prev = node.getprevious()
    if tail:
        if prev is not None:
            prev.tail = (prev.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail
    parent.remove(node)


def _cut_from(node: etree._Element) -> None:
    """Remove `node` and everything after it in document order."""
    current = node
    while current is not None and current.getparent() is not None:
        parent = current.getparent()
        for sibling in list(current.itersiblings()):
            parent.remove(sibling)
        current.tail = None
        current = parent
    parent = node.getparent()
    if parent is not None:
        parent.remove(node)
