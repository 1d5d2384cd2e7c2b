"""egovlm: EgoVLM from GRPO training to a head-mounted camera.

The shared core lives here (model loading, the frames→prompt→answer contract, the dataset
schema, video decoding, the frame descriptor); the stages are sub-packages
``egovlm.train``, ``egovlm.export``, ``egovlm.edge`` and ``egovlm.benchmarks``.
"""

__version__ = "0.1.0"
