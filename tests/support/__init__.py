"""Throwaway real servers for the test suite: Dovecot, a scripted aiosmtpd relay, PostgreSQL."""
