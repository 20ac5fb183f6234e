"""Typed, frozen settings: `config/mailflow.toml` + `MAILFLOW_<SECTION>__<KEY>` env overrides.

Precedence: environment > config file > built-in defaults. Unknown keys in the file are
rejected with the key named. Secrets are `SecretStr`, taken from the file, the env, or a
`*_file` path (e.g. `MAILFLOW_SMTP__PASSWORD_FILE=/run/credentials/mailflow/smtp`).
"""

from __future__ import annotations

import datetime as dt
import os
import tomllib
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mailflow.core.policy import Policy
from mailflow.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("config/mailflow.toml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _read_secret_file(path: Path | None, key: str) -> SecretStr | None:
    if path is None:
        return None
    try:
        return SecretStr(Path(path).read_text(encoding="utf-8").strip())
    except OSError as exc:
        raise ValueError(f"cannot read {key} ({exc.strerror})") from exc


class DatabaseSettings(_Section):
    """Where the data lives."""

    url: str = Field(
        "sqlite:///mailflow.db",
        description="SQLAlchemy URL: sqlite:////abs/path.db (embedded default) or postgresql+psycopg://user@host:port/db (several instances).",
    )
    url_file: Path | None = Field(None, description="Read the URL (it may hold a password) from this file instead.")

    @model_validator(mode="after")
    def _from_file(self) -> DatabaseSettings:
        if self.url_file is not None:
            secret = _read_secret_file(self.url_file, "database.url_file")
            assert secret is not None
            object.__setattr__(self, "url", secret.get_secret_value())
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")


class SmtpSettings(_Section):
    """The relay mailflow sends through."""

    host: str = Field("127.0.0.1", description="SMTP relay host.")
    port: int = Field(25, ge=1, le=65535, description="SMTP relay port (587 for starttls, 465 for implicit).")
    tls: Literal["none", "starttls", "implicit"] = Field(
        "none",
        description="none | starttls | implicit. Certificates are verified; starttls refuses a server that does not offer it.",
    )
    username: str | None = Field(None, description="SMTP AUTH user; no AUTH when unset.")
    password: SecretStr | None = Field(None, description="SMTP AUTH password (prefer password_file or the env).")
    password_file: Path | None = Field(None, description="Read the SMTP password from this file.")
    cafile: Path | None = Field(None, description="Extra CA bundle to verify the relay's certificate.")
    timeout_s: float = Field(30.0, gt=0, description="Timeout of one SMTP command, seconds.")
    max_connections: int = Field(4, ge=1, le=64, description="Concurrent SMTP connections (each reused).")
    rate_per_minute: int = Field(600, ge=1, description="At most this many messages per minute.")
    retry_first_s: float = Field(10.0, gt=0, description="First retry after a 4xx/timeout/disconnect, seconds; doubles each time.")
    retry_max_s: float = Field(1800.0, gt=0, description="Cap of the retry delay, seconds.")
    retry_horizon_h: float = Field(48.0, gt=0, description="Give up (state failed) after this many hours of transient failures.")

    @model_validator(mode="after")
    def _secret(self) -> SmtpSettings:
        if self.password_file is not None:
            object.__setattr__(self, "password", _read_secret_file(self.password_file, "smtp.password_file"))
        return self


class ImapSettings(_Section):
    """The inbox mentors' and mentees' replies arrive in."""

    host: str = Field("127.0.0.1", description="IMAP host.")
    port: int = Field(143, ge=1, le=65535, description="IMAP port (993 for implicit TLS).")
    tls: Literal["none", "implicit"] = Field("none", description="none (loopback only) | implicit (certificate verified).")
    username: str = Field("mailflow", description="IMAP login, used as given (often a full address).")
    password: SecretStr | None = Field(None, description="IMAP password (prefer password_file or the env).")
    password_file: Path | None = Field(None, description="Read the IMAP password from this file.")
    cafile: Path | None = Field(None, description="Extra CA bundle to verify the server's certificate.")
    folder: str = Field("INBOX", description="Folder replies arrive in.")
    processed_folder: str = Field("Processed", description="Where applied messages go (created if missing).")
    unmatched_folder: str = Field("Unmatched", description="Where messages tied to no pair, or from the wrong sender, go.")
    quarantine_folder: str = Field("Quarantine", description="Where unreadable, oversized or repeatedly failing messages go.")
    enabled: bool = Field(True, description="Read the inbox at all (false: send only).")
    idle_timeout_s: float = Field(1500.0, gt=0, description="Re-issue IDLE after this many seconds (RFC 2177: under 29 min).")
    poll_interval_s: float = Field(60.0, gt=0, description="Polling interval when the server has no IDLE.")
    timeout_s: float = Field(30.0, gt=0, description="Timeout of one IMAP command, seconds.")
    max_message_bytes: int = Field(25 * 1024 * 1024, gt=0, description="Larger messages go to Quarantine unparsed.")
    max_attempts: int = Field(3, ge=1, description="A message that fails this many times goes to Quarantine.")

    @model_validator(mode="after")
    def _secret(self) -> ImapSettings:
        if self.password_file is not None:
            object.__setattr__(self, "password", _read_secret_file(self.password_file, "imap.password_file"))
        return self


class MailSettings(_Section):
    """Who the emails come from and the links they carry."""

    from_address: str = Field(
        "mentorat@example.org",
        description="Sender address; reply and bounce addresses are plus-addresses of it (local+TOKEN@domain).",
    )
    from_name: str = Field("Programme de mentorat", description="Display name on every email.")
    programme_name: str = Field("Programme de mentorat", description="The programme's name in the emails.")
    team_address: str = Field(
        "", description="The team's shared address (urgent alerts also go there when set); shown in emails. Empty: from_address."
    )
    team_phone: str = Field("", description="The team's phone number shown in emails (optional).")
    website: str = Field("", description="The programme's website (optional).")
    survey_url: str = Field("https://example.org/questionnaire", description="Satisfaction survey link in the closure email.")
    review_guide_url: str = Field("https://example.org/guide-bilan", description="Review ('bilan') guide link in the closure email.")

    @field_validator("from_address")
    @classmethod
    def _address(cls, value: str) -> str:
        local, sep, domain = value.partition("@")
        if not sep or not local or "." not in domain or "+" in local:
            raise ValueError("must be a plain address like mentorat@example.org (no '+')")
        return value

    @property
    def domain(self) -> str:
        return self.from_address.partition("@")[2].lower()


class SecuritySettings(_Section):
    """Signing of reply and bounce tokens."""

    secret: SecretStr = Field(
        SecretStr("change-me-insecure-default"),
        description="HMAC secret for reply tokens. Set it (env or secret_file) in production.",
    )
    secret_file: Path | None = Field(None, description="Read the token secret from this file.")
    old_secrets: list[SecretStr] = Field(default_factory=list, description="Previous secrets: tokens signed with them still verify (rotation).")

    @model_validator(mode="after")
    def _secret(self) -> SecuritySettings:
        if self.secret_file is not None:
            secret = _read_secret_file(self.secret_file, "security.secret_file")
            assert secret is not None
            object.__setattr__(self, "secret", secret)
        return self


class CalendarSettings(_Section):
    """The programme calendar (from the programme guide)."""

    timezone: str = Field("Europe/Paris", description="Programme time zone: days, windows and --now without offset are read in it.")
    window_start: dt.time = Field(dt.time(8, 0), description="Emails go out from this local time...")
    window_end: dt.time = Field(dt.time(20, 0), description="...until this local time.")
    window_days: list[int] = Field([0, 1, 2, 3, 4, 5], description="Days emails go out, 0 = Monday ... 6 = Sunday.")
    reminder_days: list[int] = Field([7, 14], description="Mentee first-contact reminders, days after the introduction.")
    first_contact_days: int = Field(21, ge=1, description="Without first contact by this day: ended_no_contact, rematch.")
    followup_interval_days: int = Field(30, ge=1, description="A followup to both every N days from activation.")
    followup_reminder_days: int = Field(4, ge=1, description="Reminder to the silent ones N days after the followup.")
    call_after_days: int = Field(7, ge=1, description="Call flag for whoever is still silent N days after the followup.")
    checkpoint_months: int = Field(6, ge=1, description="Checkpoint (continue or close?) N months after matched_on.")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("window_days")
    @classmethod
    def _days(cls, value: list[int]) -> list[int]:
        if not value or any(d < 0 or d > 6 for d in value):
            raise ValueError("must list days 0 (Monday) to 6 (Sunday)")
        return value

    @model_validator(mode="after")
    def _window(self) -> CalendarSettings:
        if self.window_start >= self.window_end:
            raise ValueError("window_start must be before window_end")
        if sorted(self.reminder_days) != self.reminder_days or any(d >= self.first_contact_days for d in self.reminder_days):
            raise ValueError("reminder_days must be increasing and before first_contact_days")
        return self


class DigestSettings(_Section):
    """The referents' daily digest."""

    enabled: bool = Field(True, description="Send the daily digest.")
    time: dt.time = Field(dt.time(8, 0), description="Local time of the digest on each day of the sending window.")


class InboundSettings(_Section):
    """How replies are understood."""

    vocabulary_file: Path | None = Field(None, description="Intent vocabulary (TOML); empty: the packaged French/English one.")
    trusted_authserv_id: str = Field(
        "",
        description="Your mail server's Authentication-Results id (e.g. mx.example.org). When set, a message tied to a pair "
        "by its From address alone (no signed token) must pass DKIM/SPF/DMARC there, else it only raises a review flag.",
    )


class RetentionSettings(_Section):
    """How long personal data is kept (mailflow purge)."""

    closed_pair_months: int = Field(12, ge=1, description="Personal data of a closed pair is removed this many months after closure.")
    processed_messages_days: int = Field(
        30,
        ge=1,
        description="Processed inbound messages (and their copies in the mailbox folders) are removed after this many days.",
    )


class LoggingSettings(_Section):
    """Logs carry action names and ids only, never personal data."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    format: Literal["text", "json"] = Field("text", description="text or json (one JSON object per line).")


class Settings(BaseSettings):
    """Every setting of mailflow, frozen once loaded."""

    model_config = SettingsConfigDict(env_prefix="MAILFLOW_", env_nested_delimiter="__", extra="forbid", frozen=True, case_sensitive=False)

    database: DatabaseSettings = DatabaseSettings()
    smtp: SmtpSettings = SmtpSettings()
    imap: ImapSettings = ImapSettings()
    mail: MailSettings = MailSettings()
    security: SecuritySettings = SecuritySettings()
    calendar: CalendarSettings = CalendarSettings()
    digest: DigestSettings = DigestSettings()
    inbound: InboundSettings = InboundSettings()
    retention: RetentionSettings = RetentionSettings()
    logging: LoggingSettings = LoggingSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # env first (highest priority), then the file's values passed as init kwargs.
        return (env_settings, init_settings)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.calendar.timezone)

    def policy(self) -> Policy:
        c = self.calendar
        return Policy(
            timezone=c.timezone,
            window_start=c.window_start,
            window_end=c.window_end,
            window_days=frozenset(c.window_days),
            reminder_days=tuple(c.reminder_days),
            first_contact_days=c.first_contact_days,
            followup_interval_days=c.followup_interval_days,
            followup_reminder_days=c.followup_reminder_days,
            call_after_days=c.call_after_days,
            checkpoint_months=c.checkpoint_months,
        )

    def token_secrets(self) -> list[bytes]:
        return [s.get_secret_value().encode() for s in [self.security.secret, *self.security.old_secrets]]


def resolve_config_path(explicit: Path | None) -> Path | None:
    """--config, else $MAILFLOW_CONFIG, else config/mailflow.toml if present, else None (defaults + env)."""
    if explicit is not None:
        return explicit
    env = os.environ.get("MAILFLOW_CONFIG")
    if env:
        return Path(env)
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc


def _describe(error: Any, origin: str) -> str:
    where = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"{origin}: unknown setting '{where}'"
    msg = error["msg"].removeprefix("Value error, ")
    return f"{origin}: setting '{where}': {msg}"


def load_settings(path: Path | None = None) -> Settings:
    """Load and validate the settings; any problem is one ConfigError naming the key(s)."""
    config_path = resolve_config_path(path)
    data = _read_toml(config_path) if config_path is not None else {}
    origin = str(config_path) if config_path is not None else "settings"
    try:
        return Settings(**data)
    except ValidationError as exc:
        lines = [_describe(e, origin) for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None
