"""egovlm.edge: the live camera runtime (docs/architecture.md#edge-runtime).

Core (buffer.py, engine.py, backends/): keyframe buffer, cached model state, model backends.
The selector itself is shared with training: :mod:`egovlm.keyframes`. Ingest (GStreamer
sources), the HTTP server and the web UI sit on top of :class:`egovlm.edge.engine.Engine`.
"""
