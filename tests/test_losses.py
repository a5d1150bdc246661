import pytest
import torch

from edgecls.train.losses import MaskedASL, MaskedBCE, MaskedFocal


@pytest.mark.parametrize("loss", [MaskedBCE(), MaskedBCE(torch.tensor([2.0, 1.0, 3.0])), MaskedFocal(2.0), MaskedASL()])
def test_unknown_label_contributes_no_gradient(loss):
    torch.manual_seed(0)
    logits = torch.randn(4, 3, requires_grad=True)
    targets = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    known = torch.ones(4, 3, dtype=torch.bool)
    known[1, 2] = False
    known[3, 0] = False
    loss(logits, targets, known).backward()
    assert logits.grad[1, 2] == 0 and logits.grad[3, 0] == 0
    assert (logits.grad[known] != 0).all()


def test_unknown_target_value_does_not_change_the_loss():
    logits = torch.randn(5, 4)
    targets = torch.randint(0, 2, (5, 4)).float()
    known = torch.rand(5, 4) > 0.3
    flipped = torch.where(known, targets, 1 - targets)
    for loss in (MaskedBCE(), MaskedFocal(), MaskedASL()):
        assert torch.allclose(loss(logits, targets, known), loss(logits, flipped, known))


def test_masked_bce_is_the_mean_over_known_entries():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    known = torch.tensor([[True, False], [True, True]])
    per = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    expected = (per[0, 0] + per[1, 0] + per[1, 1]) / 3
    assert torch.allclose(MaskedBCE()(logits, targets, known), expected)


def test_all_unknown_batch_gives_zero_loss_not_nan():
    logits = torch.randn(2, 3, requires_grad=True)
    out = MaskedBCE()(logits, torch.ones(2, 3), torch.zeros(2, 3, dtype=torch.bool))
    assert out.item() == 0.0
