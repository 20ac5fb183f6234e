"""mailflow: the email side of a youth mentoring programme."""

__version__ = "0.1.0"
