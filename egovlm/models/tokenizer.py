"""A byte-level BPE tokenizer with Qwen2.5-VL's special tokens, built offline.

Real checkpoints bring their own tokenizer; this one exists so that models of the real
architecture can be built with no hub access. It is trained with HF ``tokenizers`` on a small
built-in English corpus plus the prompt contract's own text, so prompts tokenise compactly; an
extra corpus (``build_tokenizer(extra_corpus=...)``) makes a domain's words whole tokens too.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from egovlm.contract import SYSTEM_PROMPT

# Qwen2.5-VL's special tokens, in Qwen's order (ids follow the BPE vocabulary).
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# The answer grammar's tags are single (non-special) tokens: decoded text keeps them.
ANSWER_TAGS = ["<think>", "</think>", "<keyframes>", "</keyframes>", "<answer>", "</answer>"]

# Chat template: branches on content['type'] only, because `datasets` adds `video: None`
# (and `image: None`) keys to every content item (docs/architecture.md#dependency-facts).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif c['type'] == 'video' %}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_CORPUS = [
    SYSTEM_PROMPT,
    "Question: What did I pick up first? Options: A. B. C. D. E. Frame (t= s):",
    "What did the person pick up last? Which object was never touched? Where did the object end up?",
    "How many times did the wearer put something down? What was the wearer doing overall?",
    "Which happened first, picking up the cup or putting down the book?",
    "the a an and or of in on at to from with without before after first last then next never once twice",
    "picked up put down placed moved carried grasped released reached lifted opened closed walked turned",
    "cup mug bottle book phone keys apple banana box bowl plate knife spoon fork pen remote can jar ball",
    "table shelf counter sink drawer floor left right center hand hands red green blue yellow orange",
    "purple white black grey brown pink cyan magenta cube sphere cylinder cone triangle square circle",
    "I see the hand reach for the object in frame and lift it. It was placed on the shelf. zero one two",
    "three four five six seven eight nine ten cooking cleaning tidying sorting packing reading idle",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 . , : ; ?",
    "<think> </think> <keyframes> </keyframes> <answer> </answer> A B C D E",
]


def build_tokenizer(vocab_size: int = 1024, extra_corpus: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE of ``vocab_size`` tokens (plus specials) and wrap it for transformers.

    ``extra_corpus`` adds sentences to the built-in corpus (e.g. EgoSynth's words,
    :func:`egovlm.synth.vocabulary.egosynth_vocabulary`), so a model's domain words become whole
    tokens; without it the tokenizer is exactly the default one the test models use."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([*_CORPUS, *extra_corpus] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=32768,
        padding_side="left",
    )
    fast.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL_TOKENS[1:]})
    fast.add_tokens(ANSWER_TAGS)
    return fast
