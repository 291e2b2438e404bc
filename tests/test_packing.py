"""Packed micro-batches: the collator's packing and the packed_sdpa attention against padded batches, the varlen
kernel on CUDA, and compiled decoder layers."""

import pytest
import torch

from plw.loss import weighted_token_loss_sum
from plw.tokenize import tokenize_record
from plw.trainer import WeightedCollator
from training_helpers import loss_of, make_trainer


def test_packed_and_padded_batches_give_the_same_loss(model_and_tokenizer, demo_records, tmp_path):
    model, tokenizer = model_and_tokenizer
    examples = [tokenize_record(r, tokenizer, 0.1, 128) for r in demo_records[:6]]
    padded = make_trainer(model, tmp_path / "a", per_device=6, accumulation=1, pad_token_id=tokenizer.pad_token_id)
    packed = make_trainer(model, tmp_path / "b", per_device=6, accumulation=1, packing=True,
                          pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        losses = []
        for trainer in (padded, packed):
            batch = trainer.data_collator(examples)
            losses.append(loss_of(trainer, batch, trainer._get_num_items_in_batch([batch], torch.device("cpu"))))
    batch = packed.data_collator(examples)
    assert "position_ids" in batch and batch["input_ids"].shape[0] == 1
    assert torch.allclose(losses[0], losses[1], rtol=1e-5), losses


def test_packing_into_several_rows_gives_the_padded_loss(model_and_tokenizer, demo_records, tmp_path):
    model, tokenizer = model_and_tokenizer
    examples = [tokenize_record(r, tokenizer, 0.1, 128) for r in demo_records[:12]]
    trainer = make_trainer(model, tmp_path / "a", per_device=12, accumulation=1, pad_token_id=tokenizer.pad_token_id)
    row_length = max(len(example["input_ids"]) for example in examples) + 8  # forces several rows
    packer = WeightedCollator(tokenizer.pad_token_id, packing=True, row_length=row_length)
    padded, packed = trainer.data_collator(examples), packer(examples)
    assert 1 < packed["input_ids"].shape[0] < len(examples) and packed["input_ids"].shape[1] <= row_length
    assert int(packed["num_real_tokens"]) == int(padded["attention_mask"].sum())
    with torch.no_grad():
        losses = [loss_of(trainer, batch, trainer._get_num_items_in_batch([batch], torch.device("cpu")))
                  for batch in (padded, packed)]
    assert torch.allclose(losses[0], losses[1], rtol=1e-5), losses


def with_packed_sdpa(model):
    import copy

    from plw.attention import PACKED_SDPA, register_packed_sdpa

    register_packed_sdpa()
    packed_model = copy.deepcopy(model)
    packed_model.set_attn_implementation(PACKED_SDPA)
    return packed_model


def test_packed_sdpa_in_one_row_gives_the_padded_loss_and_gradients(model_and_tokenizer, demo_records, tmp_path):
    model, tokenizer = model_and_tokenizer
    examples = [tokenize_record(r, tokenizer, 0.1, 128) for r in demo_records[:8]]
    packed_model = with_packed_sdpa(model)
    padded = make_trainer(model, tmp_path / "a", per_device=8, accumulation=1, pad_token_id=tokenizer.pad_token_id)
    packed = make_trainer(packed_model, tmp_path / "b", per_device=8, accumulation=1,
                          pad_token_id=tokenizer.pad_token_id)
    packed.data_collator = WeightedCollator(tokenizer.pad_token_id, packing=True, row_length=None)
    padded_batch, packed_batch = padded.data_collator(examples), packed.data_collator(examples)
    lengths = [len(example["input_ids"]) for example in examples]
    assert packed_batch["input_ids"].shape == (1, sum(lengths))  # one row, no padding
    assert sorted(packed_batch["cu_seq_lens_q"].diff().tolist()) == sorted(lengths)
    gradients = []
    for trainer, batch in ((padded, padded_batch), (packed, packed_batch)):
        trainer.model.zero_grad()
        loss = loss_of(trainer, batch, trainer._get_num_items_in_batch([batch], torch.device("cpu")))
        loss.backward()
        gradients.append((loss.detach(), torch.cat([p.grad.flatten() for p in trainer.model.parameters()])))
    (padded_loss, padded_grad), (packed_loss, packed_grad) = gradients
    assert torch.allclose(padded_loss, packed_loss, rtol=1e-6), (padded_loss, packed_loss)
    assert torch.allclose(padded_grad, packed_grad, atol=1e-5, rtol=0), (padded_grad - packed_grad).abs().max()
    model.zero_grad()


def test_packed_sdpa_without_packing_is_causal_attention_and_generates_like_sdpa(model_and_tokenizer):
    from plw.attention import packed_sdpa_attention

    model, tokenizer = model_and_tokenizer
    packed_model = with_packed_sdpa(model)
    input_ids = tokenizer(["The capital of France is", "Name three colours"], return_tensors="pt",
                          padding=True).input_ids[:, :4]  # two unpadded rows, no position ids
    with torch.no_grad():
        assert torch.allclose(model(input_ids).logits, packed_model(input_ids).logits, atol=1e-5)
        greedy = dict(max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        assert torch.equal(model.generate(input_ids, **greedy), packed_model.generate(input_ids, **greedy))
    query = torch.zeros(1, 4, 3, 8)
    with pytest.raises(ValueError, match="does not support this model's softcap"):
        packed_sdpa_attention(None, query, query, query, None, softcap=30.0)


def reference_varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, scale, window_size,
                          enable_gqa=False):
    """torch.nn.attention.varlen.varlen_attn as documented (its kernel is CUDA-only): (tokens, heads, d) inputs."""
    assert window_size == (-1, 0) and cu_seq_q.dtype == torch.int32 and torch.equal(cu_seq_q, cu_seq_k)
    assert max_q == max_k == int(cu_seq_q.diff().max())
    outputs = []
    for start, end in zip(cu_seq_q[:-1].tolist(), cu_seq_q[1:].tolist()):
        q, k, v = (states[start:end].transpose(0, 1) for states in (query, key, value))
        outputs.append(torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=scale, enable_gqa=enable_gqa).transpose(0, 1))
    return torch.cat(outputs)


@pytest.mark.parametrize("keywords", [{"window_size", "enable_gqa"}, {"window_size"}], ids=["torch2.13", "torch2.11"])
def test_varlen_attention_hands_the_kernel_each_sequence_in_tokens_first_layout(monkeypatch, keywords):
    from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

    import plw.attention

    monkeypatch.setattr(plw.attention, "varlen_attn", reference_varlen_attn)
    monkeypatch.setattr(plw.attention, "VARLEN_KEYWORDS", keywords)
    torch.manual_seed(0)
    query, key, value = torch.randn(2, 4, 6, 8), torch.randn(2, 2, 6, 8), torch.randn(2, 2, 6, 8)  # 2 kv heads
    position_ids = torch.tensor([[0, 1, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5]])  # sequences of 2 and 4, then 6
    (cu_seq_lens, _), (longest, _) = prepare_fa_kwargs_from_position_ids(position_ids)
    output = plw.attention.varlen_causal_attention(query, key, value, cu_seq_lens, int(longest), 0.5)
    expected = torch.empty(2, 6, 4, 8)  # Transformers' layout: (batch, length, heads, d)
    for row, start, end in ((0, 0, 2), (0, 2, 6), (1, 0, 6)):
        expected[row, start:end] = torch.nn.functional.scaled_dot_product_attention(
            *(states[row, :, start:end] for states in (query, key, value)), is_causal=True, scale=0.5,
            enable_gqa=True).transpose(0, 1)
    assert torch.allclose(output, expected, atol=1e-6)


@pytest.fixture
def varlen_queries(monkeypatch) -> list[torch.Tensor]:
    """The query of each call of the varlen kernel by packed_sdpa, which still runs the kernel."""
    import plw.attention

    queries = []
    varlen_attn = plw.attention.varlen_attn

    def counted_varlen_attn(query, *args, **kwargs):
        queries.append(query)
        return varlen_attn(query, *args, **kwargs)

    monkeypatch.setattr(plw.attention, "varlen_attn", counted_varlen_attn)
    return queries


@pytest.mark.gpu
def test_packed_sdpa_on_cuda_runs_the_varlen_kernel_like_each_sequence_alone(varlen_queries):
    import plw.attention

    torch.manual_seed(0)
    lengths = [100, 37, 163]
    query, key, value = (torch.randn(1, heads, sum(lengths), 64, device="cuda", dtype=torch.bfloat16,
                                     requires_grad=True) for heads in (8, 2, 2))  # grouped-query attention
    cu_seq_lens = torch.tensor([0, 100, 137, 300], dtype=torch.int32, device="cuda")
    output, _ = plw.attention.packed_sdpa_attention(None, query, key, value, None, cu_seq_lens_q=cu_seq_lens,
                                                    max_length_q=max(lengths))
    assert [kernel_query.shape for kernel_query in varlen_queries] == [(sum(lengths), 8, 64)]
    expected = torch.cat([
        torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        for q, k, v in zip(*(states.float().split(lengths, dim=2) for states in (query, key, value)))],
        dim=2).transpose(1, 2)
    assert torch.allclose(output.float(), expected, atol=2e-2), (output.float() - expected).abs().max()
    gradients = torch.autograd.grad(output.float().square().sum(), (query, key, value))
    expected_gradients = torch.autograd.grad(expected.square().sum(), (query, key, value))
    for gradient, expected_gradient in zip(gradients, expected_gradients):
        assert torch.allclose(gradient.float(), expected_gradient.float(), atol=5e-2, rtol=5e-2)


def tiny_cuda_llama(dtype: torch.dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    from plw.attention import register_packed_sdpa

    register_packed_sdpa()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, use_cache=False)
    return LlamaForCausalLM._from_config(config, attn_implementation="packed_sdpa", dtype=dtype).cuda()


def packed_cuda_batch(lengths: list[int]) -> tuple[dict, torch.Tensor]:
    """Model inputs of random records packed into one row, and their loss weights, on the GPU."""
    inputs = WeightedCollator(pad_token_id=0, packing=True, row_length=None)(
        [{"input_ids": torch.randint(1, 256, (length,)).tolist(), "loss_weights": [1.0] * length}
         for length in lengths])
    weights = inputs.pop("loss_weights").cuda()
    del inputs["num_real_tokens"]
    return {key: value.cuda() if torch.is_tensor(value) else value for key, value in inputs.items()}, weights


@pytest.mark.gpu
def test_with_fp32_weights_under_bf16_autocast_packed_sdpa_runs_the_varlen_kernel(varlen_queries):
    model = tiny_cuda_llama(torch.float32)  # train.py's master weights; bf16 computes
    inputs, _ = packed_cuda_batch([30, 7, 52])
    with torch.autocast("cuda", dtype=torch.bfloat16):
        model.model(**inputs)
    # one call per layer, not a loop over the sequences
    assert [kernel_query.dtype for kernel_query in varlen_queries] == [torch.bfloat16] * 3


@pytest.mark.gpu
def test_compiled_decoder_layers_train_like_eager_ones_and_compile_for_two_lengths_only():
    from torch._dynamo.utils import counters

    from plw.trainer import compile_decoder_layers

    torch._dynamo.reset()
    counters.clear()
    model = tiny_cuda_llama(torch.bfloat16)

    def loss_and_gradient(inputs: dict, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model.zero_grad()
        hidden = model.model(**inputs).last_hidden_state
        loss = weighted_token_loss_sum(hidden, model.lm_head.weight, inputs["input_ids"], weights)
        (loss / weights[:, 1:].sum()).backward()
        return loss.detach(), model.model.layers[0].mlp.down_proj.weight.grad.float().flatten()

    batches = [packed_cuda_batch(lengths) for lengths in ([30, 7, 52], [11, 40], [23, 5, 61, 9], [48, 16, 3])]
    eager = [loss_and_gradient(*batch) for batch in batches]
    compile_decoder_layers(model)
    compiled = [loss_and_gradient(*batch) for batch in batches[:2]]
    graphs = counters["stats"]["unique_graphs"]
    # one graph for all three layers, static then dynamic; new lengths and sequence counts compile nothing
    assert 0 < graphs <= 2, graphs
    with torch._dynamo.config.patch(error_on_recompile=True):
        compiled += [loss_and_gradient(*batch) for batch in batches[2:]]
    for (eager_loss, eager_gradient), (loss, gradient) in zip(eager, compiled):
        assert torch.allclose(loss, eager_loss, rtol=1e-2), (loss, eager_loss)
        assert torch.nn.functional.cosine_similarity(gradient, eager_gradient, dim=0) > 0.99
