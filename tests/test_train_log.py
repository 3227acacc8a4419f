import pytest

from espnet_allinone.train_log import epoch_results, step_times, timespan_seconds, train_logs, train_seconds


def _epoch_line(epoch, train_time, total_count, time="1 minute and 2 seconds"):
    return (f"[vm] 2026 (trainer:394) INFO: {epoch}epoch results: [train] iter_time=0.02, "
            f"loss=1.0, loss_6-288-4bit=2.5, train_time={train_time}, time={time}, "
            f"total_count={total_count}, [valid] loss=1.0, acc_mean=0.75, time=3 seconds, total_count=4\n")


@pytest.mark.parametrize("text, seconds", [
    ("1 hour, 2 minutes and 3.5 seconds", 3723.5), ("8 minutes and 9.14 seconds", 489.14),
    ("11.72 seconds", 11.72), ("2 days", 172800.0),
])
def test_timespan_seconds(text, seconds):
    assert timespan_seconds(text) == pytest.approx(seconds)


def test_epoch_results_phases_keys_and_values_with_commas(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("noise\n" + _epoch_line(1, 1.0, 10, time="1 hour, 2 minutes and 3 seconds")
                   + _epoch_line(2, 2.0, 40))
    epochs = epoch_results(log)
    assert list(epochs) == [1, 2]
    assert epochs[1]["train"]["time"] == "1 hour, 2 minutes and 3 seconds"
    assert epochs[1]["train"]["loss_6-288-4bit"] == "2.5"
    assert epochs[2]["valid"] == {"loss": "1.0", "acc_mean": "0.75", "time": "3 seconds", "total_count": "4"}


def test_train_seconds_reads_rotated_logs_oldest_first(tmp_path):
    # ESPnet's launcher rotates train.log -> train.1.log -> train.2.log on restarts
    (tmp_path / "train.2.log").write_text(_epoch_line(1, 1.0, 10, time="9 seconds"))
    (tmp_path / "train.1.log").write_text(_epoch_line(1, 1.0, 10) + _epoch_line(2, 1.0, 20, time="9 seconds"))
    (tmp_path / "train.log").write_text(_epoch_line(2, 1.0, 20) + _epoch_line(3, 1.0, 30))
    assert [p.name for p in train_logs(tmp_path)] == ["train.2.log", "train.1.log", "train.log"]
    # every epoch once, from its newest log (62 s train + 3 s valid each)
    assert train_seconds(tmp_path) == pytest.approx(3 * (62 + 3))
    assert train_seconds(tmp_path / "missing") is None


def test_step_times_weight_epochs_by_their_steps(tmp_path):
    log = tmp_path / "train.log"
    assert step_times(log) is None
    # total_count is cumulative: 10 steps at 1.0 s, then 30 steps at 2.0 s
    log.write_text("noise\n" + _epoch_line(1, 1.0, 10) + _epoch_line(2, 2.0, 40))
    total, mean = step_times(log)
    assert total == pytest.approx(10 * 1.0 + 30 * 2.0)
    assert mean == pytest.approx(total / 40)
