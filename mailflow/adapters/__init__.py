"""Thin adapters, one per external system (SQL, SMTP, IMAP)."""
