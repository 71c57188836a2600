import pytest
import torch

from focus_modules import ExistenceScorer
from focus_modules.functional import existence_confidence


def eq5(l_yes, l_no):
    """Eq. 5 literally: 2 * (softmax([l_yes, l_no])[yes] - 0.5)."""
    return 2 * (torch.softmax(torch.stack([l_yes, l_no], -1), -1)[..., 0] - 0.5)


def test_single_ids_match_eq5():
    torch.manual_seed(0)
    logits = torch.randn(6, 11) * 4
    conf = existence_confidence(logits, [3], [7])
    torch.testing.assert_close(conf, eq5(logits[:, 3], logits[:, 7]))
    assert conf.shape == (6,) and conf.dtype == torch.float32


def test_several_ids_per_side_use_logsumexp():
    torch.manual_seed(1)
    logits = torch.randn(4, 20, dtype=torch.float16)
    conf = existence_confidence(logits, [1, 5], [2, 9, 13])
    f = logits.float()
    expected = eq5(f[:, [1, 5]].logsumexp(1), f[:, [2, 9, 13]].logsumexp(1))
    torch.testing.assert_close(conf, expected)


def test_sign_and_range():
    logits = torch.tensor([[10.0, -10.0], [-10.0, 10.0], [0.0, 0.0], [1e4, -1e4]])
    conf = existence_confidence(logits, [0], [1])
    assert conf[0] > 0.99 and conf[1] < -0.99 and conf[2] == 0 and conf[3] == 1.0
    assert bool(((conf >= -1) & (conf <= 1)).all())


@pytest.mark.parametrize(
    "logits, yes, no, match",
    [
        (torch.zeros(2, 3, 5), [0], [1], r"\[B, V\]"),
        (torch.zeros(2, 5, dtype=torch.long), [0], [1], r"\[B, V\]"),
        (torch.zeros(2, 5), [], [1], "yes_ids is empty"),
        (torch.zeros(2, 5), [0], [5], "no_ids .* outside"),
        (torch.zeros(2, 5), [0, 1], [1], "share"),
    ],
)
def test_errors(logits, yes, no, match):
    with pytest.raises(ValueError, match=match):
        existence_confidence(logits, yes, no)


def test_scorer_module_matches_functional():
    logits = torch.randn(3, 9)
    scorer = ExistenceScorer(yes_ids=[2, 4], no_ids=[6])
    torch.testing.assert_close(scorer(logits), existence_confidence(logits, [2, 4], [6]))
    assert "yes_ids=(2, 4)" in repr(scorer)
    with pytest.raises(ValueError, match="at least one"):
        ExistenceScorer([], [1])
