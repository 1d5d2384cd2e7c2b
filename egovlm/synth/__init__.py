"""EgoSynth: procedurally rendered egocentric clips with exact ground truth (docs/egosynth/README.md).

Entry points (import them from their modules; this package imports nothing heavy itself):

- ``egovlm.synth.generate.synthesize(out, clips, seed, split, SynthConfig(...))``: a dataset folder
  (MP4 videos, qa.jsonl, events.jsonl, captions.jsonl, clips.jsonl, optional previews).
- ``egovlm.synth.generate.build_clip(split, seed, index, config)``: one planned clip (script + renderer).
- ``egovlm.synth.live.LiveSynth(size, fps, seed)``: an endless real-time frame source.
- ``egovlm data synth``: the command line (``egovlm.synth.cli.synth``).
"""
