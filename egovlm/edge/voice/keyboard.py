"""Push-to-talk from the terminal running ``egovlm edge run --mic``: Enter starts listening,
Enter again asks.

A terminal cannot report a key *release*, so "hold to talk" becomes "press to start, press to
stop"; reading whole lines keeps the terminal in its normal mode, so log lines and Ctrl-C
behave as usual.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, TextIO

log = logging.getLogger("egovlm.edge.voice")


def start_keyboard_ptt(voice: Any, stream: TextIO, echo: Any = None) -> threading.Thread:
    """Toggle ``voice.push_to_talk`` on every line read from ``stream`` until it closes."""
    say = echo or log.info

    def run() -> None:
        pressed = False
        say("push-to-talk: press Enter to start speaking, Enter again to ask")
        for _line in stream:
            pressed = not pressed
            try:
                voice.push_to_talk(pressed)
            except Exception as e:  # no microphone: say so, keep reading
                say(f"push-to-talk unavailable: {e}")
                pressed = False
                continue
            say("listening… press Enter to ask" if pressed else "asking")
        if pressed:
            voice.push_to_talk(False)

    thread = threading.Thread(target=run, name="egovlm-ptt-keys", daemon=True)
    thread.start()
    return thread
