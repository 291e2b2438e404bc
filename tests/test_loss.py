"""The prompt-loss-weighted objective: PLW 0 and 1 against Alpaca's masked and unmasked losses, its
normalizations (also with a completion weight) against a hand-computed loss, its precision under bf16, and the
chunked loss against the full logits."""

import pytest
import torch

from plw.loss import weighted_token_loss_sum
from plw.prompts import render_prompt
from plw.tokenize import tokenize_record
from training_helpers import IGNORE_INDEX, loss_of, make_trainer


@pytest.mark.parametrize("normalization", ["global", "micro_batch", "nonzero_tokens"])
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


@pytest.mark.parametrize("normalization", ["global", "nonzero_tokens"])
def test_each_normalization_gives_the_documented_loss_with_a_completion_weight(model_and_tokenizer, demo_records,
                                                                               tmp_path, normalization):
    """Σ w·ℓ over the step, divided by Σ w (global) or by the count of tokens with w > 0 (nonzero_tokens), with
    prompt tokens weighted 0.1 and completion tokens 2, computed here from the model's full logits."""
    model, tokenizer = model_and_tokenizer
    trainer = make_trainer(model, tmp_path, per_device=4, accumulation=1, normalization=normalization,
                           pad_token_id=tokenizer.pad_token_id)
    batch = trainer.data_collator([tokenize_record(r, tokenizer, 0.1, 128, completion_weight=2.0)
                                   for r in demo_records[:4]])
    weights = batch["loss_weights"][:, 1:]
    assert weights.unique().tolist() == pytest.approx([0.0, 0.1, 2.0])  # padding, prompt, completion
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        token_losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch["input_ids"][:, 1:],
                                                         reduction="none")
        expected = (weights * token_losses).sum() / (weights.sum() if normalization == "global"
                                                     else (weights != 0).sum())
        ours = loss_of(trainer, batch, trainer._get_num_items_in_batch([batch], torch.device("cpu")))
    assert ours.item() == pytest.approx(expected.item(), rel=1e-5)


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


@pytest.mark.parametrize("normalization", ["global", "micro_batch", "nonzero_tokens"])
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
