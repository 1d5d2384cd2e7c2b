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

Use::

    egovlm edge run --model DIR --voice                  # + POST /v1/ask/audio, the page's mic button
    egovlm edge run --model DIR --mic mic://             # always listening (VAD); Enter = push-to-talk
    egovlm edge run --model DIR --mic alsa://hw:1,0 --listen ptt --audio-out alsa:hw:0,0
    egovlm edge run --model DIR --mic pulse:// --wake-phrase "hey ego"
    egovlm edge ask-audio question.wav -o "A=a red cup" -o "B=the keys"
    egovlm bench voice --out bench                       # end of speech → transcript → first token

On a Jetson, CTranslate2 needs a CUDA build for ``--asr-device cuda``; PyPI's aarch64 wheel is
CPU-only, and ``auto`` then runs int8 on the CPU cores.
"""
