"""A chapter's set-up: its run profile, where its results go, and its token windows."""

from __future__ import annotations

import pytest
import torch

from streamline_lib.book.chapter import chapter_data, check_profile, measure, measures_table
from streamline_lib.data.text_data import available_sequences, token_sequences
from streamline_lib.data.zero_shot_tasks import EVAL_SET, HEADROOM_TASKS, PAPER_TASKS
from streamline_lib.evaluation.held_out import perplexity
from streamline_lib.methods.pruning import prune


def test_an_unknown_profile_is_refused_by_name():
    with pytest.raises(ValueError, match="PROFILE = 'full' is not a run profile; use one of 'book', 'workshop'"):
        check_profile("full")


def test_chapter_data_draws_each_set_from_its_own_split(tiny):
    _, tokenizer = tiny
    data = chapter_data(tokenizer, seq_len=16, calibration_seqs=3, heldout_seqs=2, train_seqs=4, seed=1)
    assert data.calibration.shape == (3, 16) and data.heldout.shape == (2, 16) and data.train.shape == (4, 16)
    assert torch.equal(data.calibration, token_sequences(tokenizer, "wiki", "calibration", num_seqs=3, seq_len=16,
                                                         seed=1))
    assert torch.equal(data.train, token_sequences(tokenizer, "wiki", "train", num_seqs=4, seq_len=16, seed=1))
    assert data.eval_set is EVAL_SET and data.notes == ()
    assert "training: 4 x 16 tokens (64)" in data.describe()
    assert chapter_data(tokenizer, seq_len=16, calibration_seqs=1, heldout_seqs=1, limit=4).train is None


def test_chapter_data_takes_every_training_window_there_is_and_says_so(tiny):
    _, tokenizer = tiny
    seq_len = 512
    available = available_sequences(tokenizer, "wiki", "train", seq_len)
    data = chapter_data(tokenizer, seq_len=seq_len, calibration_seqs=1, heldout_seqs=1, train_seqs=available + 5)
    assert data.train.shape[0] == available
    assert data.notes == (f"the Wikipedia train split holds {available} windows of {seq_len} tokens for this "
                          f"tokenizer: training on all of them ({available * seq_len:,} tokens), not {available + 5}",)
    with pytest.raises(ValueError, match="train_seqs=-1 must be >= 0"):
        chapter_data(tokenizer, seq_len=16, calibration_seqs=1, heldout_seqs=1, train_seqs=-1)


def test_measure_takes_every_measure_and_the_distance_only_against_a_dense_model(tiny, tmp_path):
    model, tokenizer = tiny
    data = chapter_data(tokenizer, seq_len=16, calibration_seqs=2, heldout_seqs=3, limit=2, panel_limit=2)
    dense = measure(model, tokenizer, data, prompt_nll=True, cache=tmp_path, progress=False)
    assert dense.distance is None and dense.flips is None
    assert list(dense.paper.tasks) == list(PAPER_TASKS) and list(dense.panel.tasks) == list(HEADROOM_TASKS)
    assert all(item.prompt_nlls is not None for item in dense.paper.items)
    assert dense.perplexity == pytest.approx(perplexity(model, data.heldout, progress=False))
    pruned = prune(model, 2, 2).model
    measured = measure(pruned, tokenizer, data, dense=(model, dense), cache=tmp_path, progress=False)
    assert measured.distance.sequences == 3 and measured.distance.mean_kl.estimate > 0
    assert measured.flips.items == len(dense.panel.items)
    table = measures_table({"dense": dense, "pruned": measured})
    assert list(table.index) == ["dense", "pruned"]
    assert table.loc["dense", "KL from dense [95%]"] == "" and table.loc["pruned", "panel minus dense [95%]"]
    assert table.loc["pruned", "held-out perplexity"] == round(measured.perplexity, 2)
