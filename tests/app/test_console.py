"""The console: PaddleNLP's chatter hidden unless asked for; the MKL line once per process."""
import logging

import pytest

from ofa_flexbert.app.console import quiet_libraries


@pytest.fixture(autouse=True)
def _restore_level():
    yield
    quiet_libraries(True)


@pytest.mark.parametrize("flag,env,shown", [(False, None, False), (True, None, True), (False, "1", True),
                                            (False, "0", False)])
def test_paddlenlp_info_lines_show_only_when_asked_for(monkeypatch, flag, env, shown):
    if env is None:
        monkeypatch.delenv("OFA_FLEXBERT_VERBOSE", raising=False)
    else:
        monkeypatch.setenv("OFA_FLEXBERT_VERBOSE", env)
    quiet_libraries(flag)
    nlp = logging.getLogger("PaddleNLP")
    assert nlp.isEnabledFor(logging.INFO) is shown and nlp.isEnabledFor(logging.WARNING) is shown
    assert nlp.isEnabledFor(logging.ERROR)


def test_the_mkl_line_is_logged_once_per_process(monkeypatch, caplog):
    import patches.mkl_fastpath as mkl

    monkeypatch.setattr(mkl, "_logged", False)
    with caplog.at_level(logging.INFO, logger="ofa_flexbert"):
        mkl.log_status()
        mkl.log_status()
    assert sum("MKL fast path" in r.getMessage() for r in caplog.records) == 1


def test_our_lines_are_printed_once_in_our_format_beside_a_root_handler_like_paddles():
    """paddle puts a handler with its own format on the root logger; our lines go through ours alone."""
    import io

    from ofa_flexbert.app import console

    root, ours = logging.getLogger(), logging.getLogger("ofa_flexbert")
    theirs, theirs_out = logging.StreamHandler(io.StringIO()), None
    theirs.setFormatter(logging.Formatter("[%(asctime)s] [%(levelname)8s] %(filename)s:%(lineno)s - %(message)s"))
    root.addHandler(theirs)
    earlier = [h for h in ours.handlers if isinstance(h.formatter, console.ConsoleFormatter)]  # an earlier main()'s
    for handler in earlier:
        ours.removeHandler(handler)
    before = list(ours.handlers)
    try:
        console.configure_console()
        console.configure_console()  # once per process, however often called
        added = [h for h in ours.handlers if h not in before]
        assert len(added) == 1
        mine = io.StringIO()
        added[0].setStream(mine)
        ours.info("step 1")
        logging.getLogger("ofa_flexbert.store.hf_import").warning("no pooling")
        logging.getLogger("paddle").warning("theirs")
        theirs_out = theirs.stream.getvalue()
        assert mine.getvalue() == "step 1\nwarning: no pooling\n"
        assert "step 1" not in theirs_out and "no pooling" not in theirs_out and theirs_out.endswith("- theirs\n")
    finally:
        root.removeHandler(theirs)
        for handler in ours.handlers[len(before):]:
            ours.removeHandler(handler)
        for handler in earlier:
            ours.addHandler(handler)
        for handler in root.handlers:
            handler.filters = [f for f in handler.filters if not isinstance(f, console._NotOurs)]
