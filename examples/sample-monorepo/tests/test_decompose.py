from sparc.decompose import classify, plan, summarize


def test_short_task_is_simple():
    assert classify("rename a file") == "simple"


def test_long_task_is_complex():
    assert classify("parse the logs and count errors and write a report") == "complex"


def test_simple_plan_is_one_step():
    assert plan("rename a file") == ["rename a file"]


def test_complex_plan_splits_on_and():
    assert plan("parse the logs and count errors and write a weekly report") == [
        "parse the logs", "count errors", "write a weekly report"]


def test_summarize():
    assert summarize(["a", "b"]) == "2 step(s): a; b"
