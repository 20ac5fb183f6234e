"""Reading inbound mail (pure): MIME, quotes and signatures, auto-replies, bounces, intents."""

from mailflow.core.mail.bounce import BounceInfo
from mailflow.core.mail.intent import Vocabulary, classify_intent
from mailflow.core.mail.parse import ParsedMessage, parse_message, parse_report

__all__ = ["BounceInfo", "ParsedMessage", "Vocabulary", "classify_intent", "parse_message", "parse_report"]
