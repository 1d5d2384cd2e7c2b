"""Dataset importers (EgoSchema, EgoPlan-Bench) into the common JSONL schema, and EgoSynth."""
