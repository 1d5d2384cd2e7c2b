"""The miniature EgoVLM experiment (docs/mini_experiment/README.md): the base stage that stands in
for a pre-trained instruct model, the GRPO arms, their evaluation and the published demo model."""
