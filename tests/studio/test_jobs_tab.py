"""The live chart's rows: the eval curve has a place in the legend before its first point arrives."""
import math

from studio.tabs.jobs import curve_frame


def pt(step, name, value, attempt=1):
    return {"step": step, "name": name, "value": value, "attempt": attempt}


def test_an_expected_eval_curve_is_in_the_first_frame_as_a_blank_row():
    frame = curve_frame([pt(1, "loss", 2.0), pt(2, "loss", 1.5)], ("loss", "eval_loss"))
    assert set(frame["series"]) == {"loss", "eval_loss"}
    blank = frame[frame["series"] == "eval_loss"]
    assert len(blank) == 1 and math.isnan(blank["value"].iloc[0])
    # once real eval points exist the blank row is gone
    frame = curve_frame([pt(1, "loss", 2.0), pt(5, "eval_loss", 1.8)], ("loss", "eval_loss"))
    assert not frame["value"].isna().any()


def test_no_points_give_an_empty_frame_and_a_retry_point_wins():
    assert curve_frame([], ("loss", "eval_loss")).empty
    frame = curve_frame([pt(3, "loss", 9.0, attempt=1), pt(3, "loss", 1.0, attempt=2)])
    assert frame["value"].tolist() == [1.0]
