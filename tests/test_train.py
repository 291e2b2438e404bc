"""The prompt-loss-weighted objective on a real tiny LLaMA and the real Trainer."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, TrainingArguments

from plw.prompts import PROMPT_NO_INPUT, PROMPT_WITH_INPUT, render_prompt
from plw.tokenize import add_missing_special_tokens, tokenize_record
from plw.loss import weighted_token_loss_sum
from plw.trainer import PromptLossWeightTrainer, WeightedCollator

REPO = Path(__file__).resolve().parents[1]
IGNORE_INDEX = -100


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    from plw.models import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir), model_max_length=128)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    add_missing_special_tokens(tokenizer, model)
    return model, tokenizer


def make_trainer(model, tmp_path, *, per_device: int, accumulation: int, normalization: str = "global",
                 packing: bool = False, pad_token_id: int = 0, **training_args) -> PromptLossWeightTrainer:
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=per_device,
                             gradient_accumulation_steps=accumulation, report_to=[], learning_rate=0.0,
                             remove_unused_columns=False, disable_tqdm=True, **training_args)
    return PromptLossWeightTrainer(model=model, args=args, data_collator=WeightedCollator(pad_token_id, packing),
                                   loss_normalization=normalization)


def alpaca_labels(record: dict, tokenizer, max_length: int = 128) -> tuple[list[int], list[int]]:
    """Stanford Alpaca's train.py preprocess(): labels are input_ids with the source tokens set to -100."""
    source = (PROMPT_WITH_INPUT if record["input"] else PROMPT_NO_INPUT).format_map(record)
    example = source + f"{record['output']}{tokenizer.eos_token}"
    input_ids = tokenizer(example, max_length=max_length, truncation=True).input_ids
    source_len = len(tokenizer(source, max_length=max_length, truncation=True).input_ids)
    return input_ids, [IGNORE_INDEX] * source_len + input_ids[source_len:]


def loss_of(trainer, batch, num_items=None) -> torch.Tensor:
    return trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=num_items)


def test_rendered_prompt_and_weights_equal_alpacas(model_and_tokenizer, demo_records):
    _, tokenizer = model_and_tokenizer
    with_input = next(r for r in demo_records if r["input"])
    without_input = next(r for r in demo_records if not r["input"])
    assert render_prompt(with_input["instruction"], with_input["input"]) == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        f"### Instruction:\n{with_input['instruction']}\n\n### Input:\n{with_input['input']}\n\n### Response:")
    assert render_prompt(without_input["instruction"]) == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        f"request.\n\n### Instruction:\n{without_input['instruction']}\n\n### Response:")
    for record in (with_input, without_input):
        tokenized = tokenize_record(record, tokenizer, plw=0.25, max_length=128)
        input_ids, labels = alpaca_labels(record, tokenizer)
        assert tokenized["input_ids"] == input_ids
        assert input_ids[0] == tokenizer.bos_token_id and input_ids[-1] == tokenizer.eos_token_id
        assert tokenized["loss_weights"] == [0.25 if label == IGNORE_INDEX else 1.0 for label in labels]


def test_pad_token_is_added_with_the_mean_embedding(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    embeddings = model.get_input_embeddings().weight
    assert tokenizer.pad_token == "[PAD]" and tokenizer.pad_token_id == embeddings.shape[0] - 1
    torch.testing.assert_close(embeddings[-1], embeddings[:-1].mean(dim=0))


@pytest.mark.parametrize("normalization", ["global", "micro_batch"])
def test_plw_0_is_the_masked_loss_and_plw_1_the_unmasked_loss(model_and_tokenizer, demo_records, tmp_path,
                                                               normalization):
    model, tokenizer = model_and_tokenizer
    trainer = make_trainer(model, tmp_path, per_device=8, accumulation=1, normalization=normalization,
                           pad_token_id=tokenizer.pad_token_id)
    records = demo_records[:8]
    for plw in (0.0, 1.0):
        batch = trainer.data_collator([tokenize_record(r, tokenizer, plw, 128) for r in records])
        labels = batch["input_ids"].masked_fill(batch["loss_weights"] == 0, IGNORE_INDEX)
        with torch.no_grad():
            reference = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              labels=labels).loss
            num_items = trainer._get_num_items_in_batch([batch], torch.device("cpu"))
            ours = loss_of(trainer, batch, num_items)
        assert abs(ours.item() - reference.item()) / reference.item() <= 1e-6, (plw, ours, reference)


def gradients(trainer, batches) -> torch.Tensor:
    """The gradient of one optimizer step, taken exactly as Trainer's loop does with accumulation."""
    trainer.model.zero_grad()
    trainer.current_gradient_accumulation_steps = len(batches)
    num_items = trainer._get_num_items_in_batch(batches, torch.device("cpu"))
    for batch in batches:
        trainer.training_step(trainer.model, dict(batch), num_items)
    return torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])


def test_global_normalization_gives_the_same_gradient_with_accumulation(model_and_tokenizer, demo_records,
                                                                         tmp_path):
    model, tokenizer = model_and_tokenizer
    examples = [tokenize_record(r, tokenizer, 0.1, 128) for r in demo_records[:8]]
    whole = make_trainer(model, tmp_path / "a", per_device=8, accumulation=1, pad_token_id=tokenizer.pad_token_id)
    accumulated = make_trainer(model, tmp_path / "b", per_device=2, accumulation=4,
                               pad_token_id=tokenizer.pad_token_id)
    one_batch = gradients(whole, [whole.data_collator(examples)])
    four_batches = gradients(accumulated, [accumulated.data_collator(examples[i:i + 2]) for i in range(0, 8, 2)])
    assert torch.allclose(one_batch, four_batches, atol=1e-5, rtol=0), (one_batch - four_batches).abs().max()


def test_two_data_parallel_ranks_give_one_process_gradient_and_log(tiny_model_dir, tmp_path):
    """A real 2-rank run (torchrun, gloo, DDP through the Trainer): 2 ranks × 2 accumulated micro-batches of 4
    records against 1 process × 4 micro-batches of 4; the same 16 records in one optimizer step."""
    step = str(REPO / "tests" / "data_parallel_step.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    for command, name in (([sys.executable, step], "one"), ([*torchrun, step], "two")):
        accumulation = "4" if name == "one" else "2"
        result = subprocess.run([*command, str(tiny_model_dir), str(tmp_path / f"{name}.pt"), "4", accumulation],
                                env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    one, two = (torch.load(tmp_path / f"{name}.pt") for name in ("one", "two"))
    assert (one["world_size"], two["world_size"]) == (1, 2)
    for name, gradient in one["gradient"].items():
        assert torch.allclose(gradient, two["gradient"][name], atol=1e-5, rtol=0), name
    # the log counts the step's tokens and weights on every rank, and its loss is Σ w·ℓ / Σ w of the whole step
    assert two["log"]["tokens"] == one["log"]["tokens"] > 0
    for key in ("weight_sum", "loss"):
        assert two["log"][key] == pytest.approx(one["log"][key], rel=1e-6), key


@pytest.mark.parametrize("normalization", ["global", "micro_batch"])
def test_a_micro_batch_without_weight_trains_with_a_zero_gradient(model_and_tokenizer, demo_records, tmp_path,
                                                                   normalization):
    model, tokenizer = model_and_tokenizer
    long_prompts = [r for r in demo_records if len(render_prompt(r["instruction"], r["input"])) > 200][:2]
    examples = [tokenize_record(r, tokenizer, 0.0, 16) for r in long_prompts]  # PLW 0, completions cut away
    assert len(examples) == 2 and not any(any(example["loss_weights"]) for example in examples)
    trainer = make_trainer(model, tmp_path, per_device=2, accumulation=1, normalization=normalization, packing=True,
                           pad_token_id=tokenizer.pad_token_id)
    gradient = gradients(trainer, [trainer.data_collator(examples)])
    assert gradient.numel() == sum(p.numel() for p in model.parameters()) and not gradient.any()
    model.zero_grad()


def test_with_bf16_mixed_precision_the_loss_projects_in_bf16_like_the_models_own_head(model_and_tokenizer,
                                                                                    demo_records, tmp_path):
    # Accelerate runs the model's forward under autocast, but compute_loss outside it: without its own
    # autocast the loss projected fp32 weights in fp32, 3e-4 off the plain loss here (and slow on a GPU)
    model, tokenizer = model_and_tokenizer
    trainer = make_trainer(model, tmp_path, per_device=8, accumulation=1, pad_token_id=tokenizer.pad_token_id,
                           use_cpu=True, bf16=True)
    prepared = trainer.accelerator.prepare_model(model)  # its forward now runs under bf16 autocast
    try:
        batch = trainer.data_collator([tokenize_record(r, tokenizer, 1.0, 128) for r in demo_records[:8]])
        labels = batch["input_ids"].masked_fill(batch["loss_weights"] == 0, IGNORE_INDEX)
        with torch.no_grad():
            plain = prepared(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
            ours = trainer.compute_loss(prepared, dict(batch))
        assert abs(ours.item() - plain.item()) / plain.item() <= 1e-6, (ours, plain)
    finally:
        model.forward = model._original_forward  # the module-scoped model is shared with the other tests


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
    assert "position_ids" in packed.data_collator(examples) and packed.data_collator(examples)["input_ids"].shape[0] == 1
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

    from plw.attention import PACKED_SDPA

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
    import plw.attention
    from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the varlen kernel runs only on CUDA")
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the varlen kernel runs only on CUDA")
def test_with_fp32_weights_under_bf16_autocast_packed_sdpa_runs_the_varlen_kernel(varlen_queries):
    model = tiny_cuda_llama(torch.float32)  # train.py's master weights; bf16 computes
    inputs, _ = packed_cuda_batch([30, 7, 52])
    with torch.autocast("cuda", dtype=torch.bfloat16):
        model.model(**inputs)
    # one call per layer, not a loop over the sequences
    assert [kernel_query.dtype for kernel_query in varlen_queries] == [torch.bfloat16] * 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiled layers with the varlen kernel: CUDA")
def test_compiled_decoder_layers_train_like_eager_ones_and_compile_for_two_lengths_only():
    from torch._dynamo.utils import counters

    from plw.models import compile_decoder_layers

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


# ---- the train script: resume after a kill, refusal of a bad PLW ------------------------------------------

def train_command(tmp_path: Path, data: Path, base: Path, name: str, settings: dict, plw: str = "0.1") -> list:
    return [sys.executable, str(REPO / "scripts" / "train.py"), "--data", str(data), "--base-model", str(base),
            "--plw", plw, "--seed", "42", "--settings", json.dumps(settings),
            "--checkpoints", str(tmp_path / name / "checkpoints"), "--output-model", str(tmp_path / name / "model"),
            "--output-log", str(tmp_path / name / "train_log.parquet")]


@pytest.fixture(scope="module")
def demo_parquet(tmp_path_factory, demo_records):
    from plw.records import normalize

    path = tmp_path_factory.mktemp("data") / "demo.parquet"
    normalize(demo_records[:96])[0].to_parquet(path)
    return path


@pytest.fixture(scope="module")
def training_settings():
    import yaml
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    return {**config["training"], "max_steps": 12, "save_steps": 4, "global_batch_size": 8,
            "per_device_batch_size": 4}


def test_killed_training_resumes_from_its_checkpoint_and_ends_like_an_uninterrupted_run(
        tmp_path, tiny_model_dir, demo_parquet, training_settings):
    env = {**os.environ, "PYTHONPATH": str(REPO / "scripts")}
    subprocess.run(train_command(tmp_path, demo_parquet, tiny_model_dir, "straight", training_settings),
                   check=True, env=env, capture_output=True)

    command = train_command(tmp_path, demo_parquet, tiny_model_dir, "killed", training_settings)
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_checkpoint = tmp_path / "killed" / "checkpoints" / "checkpoint-4"
    deadline = time.monotonic() + 300
    while not (first_checkpoint / "trainer_state.json").exists() and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "killed" / "model").exists(), "a killed run must leave no final model"
    # as if killed while writing the next checkpoint: its weights are there, its trainer_state.json is not yet
    partial = first_checkpoint.with_name("checkpoint-8")
    partial.mkdir(exist_ok=True)
    shutil.copy(first_checkpoint / "model.safetensors", partial)

    resumed = subprocess.run(command, check=True, env=env, capture_output=True, text=True)
    assert f"resuming from {first_checkpoint}" in resumed.stdout, resumed.stdout
    straight = pd.read_parquet(tmp_path / "straight" / "train_log.parquet")
    again = pd.read_parquet(tmp_path / "killed" / "train_log.parquet")
    assert straight["step"].tolist() == list(range(1, 13)) == again["step"].tolist()
    assert again["loss"].iloc[-1] == pytest.approx(straight["loss"].iloc[-1], rel=1e-5)
    assert (straight["weight_sum"] > 0).all() and (straight["tokens"] > 0).all()
    assert not (tmp_path / "killed" / "checkpoints").exists(), "checkpoints are removed once training completes"


def test_plw_outside_0_1_is_refused_before_the_model_loads(tmp_path, training_settings):
    command = train_command(tmp_path, tmp_path / "missing.parquet", tmp_path / "no-model", "bad",
                            training_settings, plw="1.5")
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--plw 1.5: the prompt-loss weight must lie in [0, 1]" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("chunk_size", [7, 64, None], ids=["7-token chunks", "64-token chunks", "default"])
def test_chunked_loss_and_its_gradients_equal_the_full_logits_loss(chunk_size):
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 50, 16, generator=generator, requires_grad=True)
    head = torch.randn(300, 16, generator=generator, requires_grad=True)
    input_ids = torch.randint(0, 300, (2, 50), generator=generator)
    weights = torch.rand(2, 50, generator=generator) * (torch.rand(2, 50, generator=generator) > 0.3)

    logits = (hidden[:, :-1] @ head.T).reshape(-1, 300)
    losses = torch.nn.functional.cross_entropy(logits, input_ids[:, 1:].reshape(-1), reduction="none")
    expected = (losses * weights[:, 1:].reshape(-1)).sum()
    expected_grads = torch.autograd.grad(expected, (hidden, head))

    chunked = weighted_token_loss_sum(hidden, head, input_ids, weights, chunk_size)
    # the gradients are made in the forward pass and scaled in the backward: scale by a factor other than 1
    grads = torch.autograd.grad(chunked * 0.37, (hidden, head))
    assert torch.allclose(chunked, expected, rtol=1e-5)
    for grad, expected_grad in zip(grads, expected_grads):
        assert torch.allclose(grad, expected_grad * 0.37, rtol=1e-4, atol=1e-6)

    # a frozen head (LoRA) gets no gradient and costs none; without autograd the loss is the same
    frozen = weighted_token_loss_sum(hidden, head.detach(), input_ids, weights, chunk_size)
    (hidden_grad,) = torch.autograd.grad(frozen, (hidden,))
    assert torch.allclose(hidden_grad, expected_grads[0], rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(weighted_token_loss_sum(hidden, head, input_ids, weights, chunk_size), expected,
                              rtol=1e-5)
