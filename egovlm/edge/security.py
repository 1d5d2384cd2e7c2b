"""Who may reach the edge API: the bind policy and where the bearer token comes from.

A bind beyond loopback exposes the camera and the model to the network, so it needs a bearer
token (:func:`check_bind`), and that token must be strong
(:func:`egovlm.edge.http_guards.check_token_strength`). :func:`egovlm.edge.serving.serve` checks
again where it binds, so every caller (the CLI, the demo, scripts) gets the same rule.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

TOKEN_ENV = "EGOVLM_TOKEN"
DEFAULT_URL = "http://127.0.0.1:8000"  # where `egovlm edge run` listens unless told otherwise


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback address (a host name may resolve anywhere)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: may resolve anywhere


class UnsafeBindError(ValueError):
    """Binding beyond loopback without a bearer token: the camera and the model would be open to
    the network."""


class TokenSourceError(ValueError):
    """The bearer token cannot be taken from where it was given (a missing or empty token file,
    two sources at once, a token on the command line of a network bind)."""


def check_bind(host: str, token: str | None) -> None:
    """Refuse a bind that is not loopback unless a bearer token protects the API, and any token
    that is too weak (:func:`egovlm.edge.http_guards.check_token_strength`, WeakTokenError)."""
    from egovlm.edge.http_guards import check_token_strength

    if not is_loopback(host) and not (token and token.strip()):
        raise UnsafeBindError(
            f"binding {host or '(all interfaces)'} exposes the camera and the model to the network: "
            f"pass a bearer token as ${TOKEN_ENV} or --token-file FILE"
        )
    if token and token.strip():
        check_token_strength(token)


def read_token(token: str | None, token_file: Path | None, on_command_line: bool, host: str) -> str | None:
    """The bearer token from ``$EGOVLM_TOKEN``/``--token`` or ``--token-file`` (its first line).
    A token typed on the command line is readable by every local user (``ps``,
    ``/proc/PID/cmdline``): refused for a bind beyond loopback, warned about on loopback.
    Raises :class:`TokenSourceError`."""
    if token_file is not None:
        if token is not None:
            raise TokenSourceError(f"both --token-file and --token (or ${TOKEN_ENV}): pass one")
        try:
            lines = token_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise TokenSourceError(f"--token-file {token_file}: cannot read it ({e})") from None
        token = lines[0].strip() if lines else ""
        if not token:
            raise TokenSourceError(f"--token-file {token_file}: the first line is empty")
        return token
    if token is not None and on_command_line:
        where = f"${TOKEN_ENV} or --token-file FILE"
        if not is_loopback(host):
            raise TokenSourceError(
                f"--token on the command line is readable by every user of this machine (ps, /proc) and "
                f"{host or '(all interfaces)'} is reachable from the network: pass it as {where}"
            )
        logging.getLogger("egovlm.edge").warning(
            "--token on the command line is readable by every user of this machine (ps): prefer %s", where
        )
    return token
