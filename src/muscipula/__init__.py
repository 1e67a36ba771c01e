"""muscipula: a multi-protocol low-interaction honeypot."""

__version__ = "0.1.0"
