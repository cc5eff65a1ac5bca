"""What can go on the wire: API keys, header names and values, base URLs.

Each check returns the problem in words (``None`` when there is none) and
never quotes the value, which may be a key. Configuration turns a problem
into an :class:`~llm_sync.errors.LLMConfigError` naming the field, the
client into an :class:`~llm_sync.errors.LLMValidationError`: a value that
cannot be sent is refused once, up front, instead of failing on every call
as a raw ``ValueError`` or ``UnicodeEncodeError`` deep inside ``http.client``.
"""

from __future__ import annotations

import re
from typing import Optional
from urllib.parse import urlsplit

import requests

__all__ = [
    "HEADER_NAME",
    "key_problem",
    "header_name_problem",
    "header_value_problem",
    "base_url_problem",
    "utf8_problem",
]

HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""An HTTP field name: an RFC 9110 token."""

# C0 controls (CR, LF and NUL among them), DEL and the C1 controls.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def utf8_problem(text: str) -> Optional[str]:
    """A lone surrogate (``"\\ud800"``, left by a bad decode) is no Unicode
    text: JSON can only escape it, and servers refuse the result."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"has a lone surrogate at position {exc.start}, which is not valid Unicode text"
    return None


def _latin1_problem(text: str) -> Optional[str]:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError as exc:
        return f"has a character that cannot be sent in an HTTP header (not Latin-1) at position {exc.start}"
    return None


def key_problem(key: str) -> Optional[str]:
    """An API key is one token: no whitespace, no control characters,
    Latin-1 (it travels in a header). Refused, not silently stripped: a key
    that carries a line break was usually pasted together with another."""
    if not key:
        return "is empty"
    if key != key.strip():
        return "has leading or trailing whitespace (a line break copied with it?)"
    if "\n" in key or "\r" in key:
        return "has a line break inside it (two keys pasted together? give a list)"
    if _CONTROL.search(key):
        return "has a control character"
    if any(char.isspace() for char in key):
        return "has whitespace inside it (several keys? give a list, or separate them with commas)"
    return _latin1_problem(key)


def header_name_problem(name: object) -> Optional[str]:
    if not isinstance(name, str) or not HEADER_NAME.fullmatch(name):
        return "is not a valid HTTP header name"
    return None


def header_value_problem(value: object) -> Optional[str]:
    """A header value: one line of Latin-1 with no control characters other
    than a tab, and no whitespace at either end (servers would trim it)."""
    if not isinstance(value, str):
        return f"must be a string, not {type(value).__name__}"
    if "\n" in value or "\r" in value:
        return "has a line break"
    if _CONTROL.search(value.replace("\t", " ")):
        return "has a control character"
    if value != value.strip():
        return "has leading or trailing whitespace"
    return _latin1_problem(value)


def base_url_problem(url: str) -> Optional[str]:
    """Where requests go: ``http(s)://host[:port][/path]``. Credentials in
    the URL are refused: with an explicit auth object requests never sends
    them, so they would only ever show up in messages. A query string or
    fragment would be mangled by the paths appended to it."""
    if _CONTROL.search(url) or any(char.isspace() for char in url):
        return "has whitespace or a control character"
    if utf8_problem(url):
        return "is not valid Unicode text"
    if not url.lower().startswith(("http://", "https://")):
        return "must start with http:// or https:// and name a host"
    if "@" in re.split(r"[/?#]", url.split("://", 1)[1], maxsplit=1)[0]:
        return ("must not carry credentials (user:password@): they would never be sent; put the key in "
                "api_keys, and a gateway's own credentials in headers")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a valid URL (is the port a number from 1 to 65535?)"
    if not parts.hostname:
        return "must start with http:// or https:// and name a host"
    if port == 0:
        return "has port 0: give a port from 1 to 65535"
    if "?" in url:
        return "must not have a query string (pass per-call parameters as extra_query)"
    if "#" in url:
        return "must not have a fragment (#...)"
    try:  # what requests will do with it on every call
        requests.PreparedRequest().prepare_url(url.rstrip("/") + "/v1", None)
    except (requests.exceptions.RequestException, ValueError):
        return "is not a URL requests can send to"
    return None
