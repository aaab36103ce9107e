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
