"""The local vision-language path: a tiny random Llava (CLIP vision tower + Llama) built offline."""

import numpy as np
import pytest
import torch

from finexl.chat import LLMError, LocalChat, LocalVisionChat, image_part


@pytest.fixture(scope="module")
def tiny_vlm_dir(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # transformers 4
        from transformers import CLIPImageProcessor as ImageProcessor

    words = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "red", "tint", "striped", "background", "user", "assistant",
             ":"]  # fmt: skip
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    template = (
        "{% for m in messages %}{{ m['role'] }} : {% for c in m['content'] %}{% if c['type'] == 'image' %}<image> "
        "{% else %}{{ c['text'] }} {% endif %}{% endfor %}</s> {% endfor %}{% if add_generation_prompt %}assistant : "
        "{% endif %}"
    )
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                              image_size=16, patch_size=8, projection_dim=16)  # fmt: skip
    text = LlamaConfig(
        vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, bos_token_id=1, eos_token_id=2, pad_token_id=3,
    )  # fmt: skip
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=4, vision_feature_layer=-1,
                         image_seq_length=4)  # fmt: skip
    torch.manual_seed(0)
    processor = LlavaProcessor(
        image_processor=ImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
        tokenizer=tokenizer, chat_template=template, patch_size=8, vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("vlm")
    LlavaForConditionalGeneration(config).save_pretrained(path)
    processor.save_pretrained(path)
    return path


def test_local_vlm_reads_image_pairs_and_proposals_pool(tiny_vlm_dir, tmp_path):
    from finexl.explanation.proposals import propose_concepts

    backend = LocalVisionChat(tiny_vlm_dir, max_new_tokens=6, cache_dir=tmp_path)
    images = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    message = [{"role": "user", "content": [{"type": "text", "text": "red tint"}, image_part(images[0]),
                                            image_part(images[1])]}]  # fmt: skip
    reply = backend.chat(message)
    assert isinstance(reply, str) and reply.strip()
    got = propose_concepts(backend, images, images[::-1], ["a shape"] * 4, n_pairs=2, min_count=1)
    assert all(isinstance(p, str) and c >= 1 for p, c in got)
    assert len(list((tmp_path / "llm").glob("*.json"))) == 3  # one reply per distinct request, cached


def test_vlm_folder_must_exist_and_is_not_a_text_chat_model(tmp_path, tiny_vlm_dir):
    with pytest.raises(LLMError, match="config.json"):
        LocalVisionChat(tmp_path)
    with pytest.raises(LLMError, match="not a transformers"):
        LocalChat(tiny_vlm_dir)  # a Llava folder is not a causal LM chat model
