"""Voice for the edge runtime: ask about recent footage by speaking, hear the answer.

One module per concept::

    audio     GStreamer audio in (microphone, file, uploaded bytes) → 16 kHz mono float32
    vad       Silero VAD (the ONNX model shipped inside faster-whisper): streaming utterance cuts
    asr       faster-whisper speech recognition, loaded offline from a local model folder
    tts       espeak-ng (or piper) speech synthesis and GStreamer playback, interruptible
    wake      the optional wake phrase ("hey ego, what did I pick up?")
    pipeline  the assistant: utterance → transcript → ``runtime.ask`` → spoken answer, timed
    routes    the HTTP routes (``POST /v1/ask/audio``, ``/v1/voice``, push-to-talk)

Heavy libraries (GStreamer, faster-whisper, onnxruntime) are imported inside the functions
that need them, so importing this package is cheap.
"""
