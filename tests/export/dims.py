"""Model sizes the export and backend tests share."""

# Qwen2.5-VL-3B's decoder at the default 448x336 keyframe (192 tokens, 768 patches), as an
# export manifest's ``model`` section holds it.
QWEN_3B = {
    "hidden_size": 2048,
    "num_layers": 36,
    "num_heads": 16,
    "num_kv_heads": 2,
    "head_dim": 128,
    "vocab_size": 151936,
    "tokens_per_keyframe": 192,
    "num_patches": 768,
    "patch_dim": 1176,
}
