"""The command lines' last guard: an unexpected error shows a traceback without the input's bytes."""

import pytest

from app.cli import MAX_SHOWN, clip, guarded


def test_an_unexpected_error_never_prints_a_photos_bytes(capsys):
    photo = bytes(range(256)) * 400  # 100 KB, as a JPEG's repr would fill a traceback

    @guarded
    def main(argv):
        raise TypeError(f"Binding inputs failed. Received kwargs: {{'image_bytes': {[photo]!r}}}")

    with pytest.raises(SystemExit) as exit_:
        main([])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "Traceback" in err and "TypeError: Binding inputs failed" in err
    assert "\\x00\\x01\\x02" not in err and "<bytes literal of " in err and len(err) < 5000


def test_clip_cuts_long_lines_and_keeps_short_ones():
    assert clip("a short line\nb'\\xff\\xd8'") == "a short line\nb'\\xff\\xd8'"
    long = clip("x" * (MAX_SHOWN + 10))
    assert long.startswith("x" * MAX_SHOWN) and long.endswith("[10 characters cut]")
