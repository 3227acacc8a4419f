"""The one reader of Kaldi-style data-dir files."""

import pytest

from espnet_allinone.data.kaldi import read_segments, read_table, read_text, write_table


def test_read_table_keeps_order_empty_values_and_spaces(tmp_path):
    f = tmp_path / "text"
    f.write_text("b two  words\n\na\nc  x y\n")
    assert list(read_table(f).items()) == [("b", "two  words"), ("a", ""), ("c", "x y")]
    assert read_text(f) == {"b": "two words", "a": "", "c": "x y"}
    assert read_table(f, keys=["c", "a", "zz"]) == {"a": "", "c": "x y"}


def test_read_table_names_a_repeated_key(tmp_path):
    f = tmp_path / "wav.scp"
    f.write_text("u1 a.wav\nu2 b.wav\nu1 c.wav\n")
    with pytest.raises(ValueError, match=r"wav.scp:3: key 'u1' repeated \(first on line 1\)"):
        read_table(f)


def test_read_segments_and_its_errors(tmp_path):
    f = tmp_path / "segments"
    f.write_text("s1 rec1 0.5 1.25\ns2 rec1 2 -1\n")
    assert read_segments(f) == {"s1": ("rec1", 0.5, 1.25), "s2": ("rec1", 2.0, -1.0)}
    f.write_text("s1 rec1 0.5\n")
    with pytest.raises(ValueError, match="segments: bad line for s1: 'rec1 0.5'"):
        read_segments(f)
    f.write_text("s1 rec1 zero 1\n")
    with pytest.raises(ValueError, match="bad line for s1"):
        read_segments(f)


def test_write_table_round_trip(tmp_path):
    table = {"u2": "hello world", "u1": ""}
    write_table(tmp_path / "t", table)
    assert (tmp_path / "t").read_text() == "u2 hello world\nu1\n"
    assert read_table(tmp_path / "t") == table


def test_audio_segments_must_name_recordings_of_wav_scp(tmp_path):
    from espnet_allinone.data.audio import DataDirAudio

    (tmp_path / "wav.scp").write_text("rec1 a.wav\n")
    (tmp_path / "segments").write_text("s1 rec2 0 1\n")
    with pytest.raises(ValueError, match="s1 is cut from rec2, which wav.scp does not list"):
        DataDirAudio(tmp_path, 16000)


@pytest.mark.parametrize("conf,fs", [(None, 16000), ({}, 16000), ({"fs": 8000}, 8000), ({"fs": "16k"}, 16000),
                                     ({"fs": "8k"}, 8000), ({"fs": "22050"}, 22050)])
def test_sample_rate_reads_fs_as_espnet_frontends_do(conf, fs):
    from espnet_allinone.data.audio import sample_rate

    assert sample_rate(conf) == fs


def test_sample_rate_names_a_bad_fs():
    from espnet_allinone.data.audio import sample_rate

    with pytest.raises(ValueError, match="frontend_conf fs='fast' is no sample rate"):
        sample_rate({"fs": "fast"})
