"""The mechanism measures: loss variability by hand, weight distances of a model to itself, to a known
perturbation, and to a fine-tuned model whose embeddings grew a [PAD] row, and memorization BLEU."""

import math

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from plw.generate import greedy_completions
from plw.mechanisms import loss_variability, memorization_bleu, weight_distance


def test_loss_variability_is_the_relative_sample_sd():
    stats = loss_variability(pd.DataFrame({"loss": [1.0, 2.0, 3.0]}))
    assert stats == pytest.approx({"loss_mean": 2.0, "loss_rsd": 1.0 / 2.0})  # sample SD 1, mean 2


def copy_with(base_dir, destination, change) -> None:
    """A model directory like base_dir whose tensors `change` maps (name, tensor) -> tensor."""
    destination.mkdir()
    tensors = load_file(base_dir / "model.safetensors")
    save_file({name: change(name, tensor.clone()) for name, tensor in tensors.items()},
              destination / "model.safetensors", metadata={"format": "pt"})


def test_a_model_is_at_distance_0_from_itself(tiny_model_dir):
    distance = weight_distance(tiny_model_dir, tiny_model_dir, minkowski_p=1)
    assert distance["weight_l2"] == 0 and distance["weight_minkowski"] == 0 and distance["grown_tensors"] == ""


@pytest.mark.parametrize("p", [1, 3])
def test_a_known_perturbation_is_at_the_distance_the_formula_says(tiny_model_dir, tmp_path, p):
    # +0.5 on 10 values of one tensor and -0.25 on 4 of another: L2 = sqrt(10·0.25 + 4·0.0625), Minkowski p too
    names = sorted(load_file(tiny_model_dir / "model.safetensors"))
    moved = {names[0]: 0.5, names[-1]: -0.25}
    counts = {names[0]: 10, names[-1]: 4}

    def perturb(name, tensor):
        if name in moved:
            tensor.view(-1)[:counts[name]] += moved[name]
        return tensor

    copy_with(tiny_model_dir, tmp_path / "tuned", perturb)
    distance = weight_distance(tiny_model_dir, tmp_path / "tuned", minkowski_p=p)
    assert distance["weight_l2"] == pytest.approx(math.sqrt(10 * 0.5 ** 2 + 4 * 0.25 ** 2), rel=1e-6)
    assert distance["weight_minkowski"] == pytest.approx((10 * 0.5 ** p + 4 * 0.25 ** p) ** (1 / p), rel=1e-6)


def test_grown_embeddings_are_compared_on_the_base_models_rows(tiny_model_dir, tmp_path):
    embeddings = next(name for name in load_file(tiny_model_dir / "model.safetensors") if "embed_tokens" in name)

    def add_a_row(name, tensor):
        return torch.cat([tensor, torch.full_like(tensor[:1], 7.0)]) if name == embeddings else tensor

    copy_with(tiny_model_dir, tmp_path / "tuned", add_a_row)
    distance = weight_distance(tiny_model_dir, tmp_path / "tuned", minkowski_p=2)
    assert distance["weight_l2"] == 0 and distance["grown_tensors"] == embeddings


def test_a_model_that_repeats_its_training_completions_memorizes_them_at_bleu_100(demo_records):
    completions = [record["output"] for record in demo_records[:20]]
    assert memorization_bleu(completions, completions) == pytest.approx(100.0)
    # a model that says something else for half of them memorizes less
    other = [record["output"] for record in demo_records[20:30]]
    assert memorization_bleu(other + completions[10:], completions) < 60


def test_greedy_completions_continue_each_alpaca_prompt(tiny_model_dir, demo_records):
    records = demo_records[:5]
    completions = greedy_completions(str(tiny_model_dir), records, max_new_tokens=8, batch_size=2)
    assert len(completions) == 5 and all(isinstance(completion, str) for completion in completions)
    # greedy: the same prompt gives the same completion, alone or in a padded batch
    assert greedy_completions(str(tiny_model_dir), records[3:4], max_new_tokens=8) == completions[3:4]
