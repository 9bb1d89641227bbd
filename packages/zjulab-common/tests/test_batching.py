import pytest

from zjulab.common import ConfigError, InputError, batched, length_buckets, token_budget_batches


def test_batched_exact_chunks():
    assert list(batched(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(batched([], 3)) == []
    with pytest.raises(ConfigError, match="batch size"):
        list(batched([1], 0))


def test_token_budget_hand_worked():
    # lengths sorted longest first: 9(i1), 5(i3), 4(i0), 3(i2), 2(i4); budget 10 padded tokens
    # [i1] alone: 9 -> adding i3 costs 2*9=18 > 10 -> close. [i3, i0]: 2*5=10 ok; +i2 3*5=15 > 10.
    # [i2, i4]: 2*3=6 ok.
    assert token_budget_batches([4, 9, 3, 5, 2], 10) == [[1], [3, 0], [2, 4]]


def test_token_budget_unsorted_and_capped():
    assert token_budget_batches([1, 1, 1, 1, 1], 100, max_batch_size=2) == [[0, 1], [2, 3], [4]]
    assert token_budget_batches([2, 5, 2], 6, sort=False) == [[0], [1], [2]]


def test_token_budget_errors():
    with pytest.raises(InputError, match="item 1 has 11 tokens"):
        token_budget_batches([3, 11], 10)
    with pytest.raises(ConfigError, match="max_tokens"):
        token_budget_batches([1], 0)


def test_length_buckets_longest_first():
    assert length_buckets(["aa", "a", "aaaa", "aaa"], len, 2) == [[2, 3], [0, 1]]


def test_padding_side_sets_and_restores_both_sides(tiny_tokenizer):
    from zjulab.common.batching import padding_side

    tok = tiny_tokenizer
    tok.padding_side, tok.truncation_side = "right", "right"
    with padding_side(tok, "left", truncation="left"):
        assert (tok.padding_side, tok.truncation_side) == ("left", "left")
    assert (tok.padding_side, tok.truncation_side) == ("right", "right")
    with pytest.raises(RuntimeError), padding_side(tok, None, truncation="left"):
        assert (tok.padding_side, tok.truncation_side) == ("right", "left")
        raise RuntimeError
    assert (tok.padding_side, tok.truncation_side) == ("right", "right")
