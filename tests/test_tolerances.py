"""The accuracy checks of conftest.py themselves: a norm-wise error hides one
wrong element in a million; the per-element bound must not."""
import pytest
import torch

from conftest import FP32_RTOL, assert_accurate, rel_err


def one_wrong_element(make):
    ref = make(1000, 1000, dtype=torch.float64)
    out = ref.to(torch.float32)                   # correct to rounding ...
    out[456, 789] += 1e-3                        # ... but for one element, off by 1e-3 (rms(ref) = 1)
    return out, ref


def test_norm_wise_alone_would_pass_one_wrong_element(make):
    out, ref = one_wrong_element(make)
    assert float(rel_err(out, ref)) < FP32_RTOL / 5


def test_assert_accurate_names_the_wrong_element(make):
    out, ref = one_wrong_element(make)
    with pytest.raises(AssertionError, match=r"element \[456, 789\]"):
        assert_accurate(out, ref, torch.float32)
    assert_accurate(ref.to(torch.float32), ref, torch.float32)    # rounding alone passes


def test_every_rel_err_comparison_checks_elements_too(make):
    out, ref = one_wrong_element(make)
    with pytest.raises(AssertionError, match=r"element \[456, 789\].*per-element bound"):
        assert rel_err(out, ref) <= FP32_RTOL
    with pytest.raises(AssertionError, match=r"element \[456, 789\]"):
        assert rel_err(out, ref) < FP32_RTOL
    assert rel_err(ref.to(torch.float32), ref) <= FP32_RTOL


def test_low_precision_elements_may_match_pytorchs_own_error(make):
    ref = make(64, dtype=torch.float64).abs() * 1e-4 + 1e-4      # small gradients of a saturated tanh
    ours = torch.zeros(64, dtype=torch.bfloat16)                  # 1 - h'^2 with h' rounded to 1: zero
    assert_accurate(ours, ref, torch.bfloat16, baseline=torch.zeros(64, dtype=torch.bfloat16))
    with pytest.raises(AssertionError):
        assert_accurate(ours, ref, torch.bfloat16, baseline=ref.to(torch.bfloat16))
