"""The web app's pieces without a server: table rows, tags, `medley serve` arguments and its warning."""

from __future__ import annotations

import pytest

from app.web.adapter_table import HEADERS, manual_rows, rows_from_table, table_from_rows
from app.web.services import AdapterRow, append_tag, lora_tag


def test_rows_round_trip_through_the_table() -> None:
    rows = [AdapterRow("heart", 0.8, "content", True, "auto", "a heart", "trigger word"),
            AdapterRow("zigzag", 0.5, use=False)]
    assert rows_from_table(table_from_rows(rows)) == rows
    assert rows_from_table({"headers": HEADERS, "data": table_from_rows(rows)}) == rows
    assert manual_rows(rows) == [rows[1]]


def test_rows_from_table_tolerates_what_a_browser_sends() -> None:
    rows = rows_from_table([["true", " heart ", "x", None, None], ["", "", 1, "", ""], [1, "b", float("nan")]])
    assert [(r.name, r.weight, r.use, r.source) for r in rows] == [("heart", 1.0, True, "manual"),
                                                                   ("b", 1.0, True, "manual")]
    assert rows_from_table(None) == []


def test_use_in_prompt_appends_a_tag() -> None:
    assert lora_tag("heart", 0.75) == "<lora:heart:0.75>"
    assert append_tag("a red circle ", "heart", 1.0) == "a red circle <lora:heart:1>"
    assert append_tag("", "heart", 0.5) == "<lora:heart:0.5>"


def test_serve_is_registered_with_safe_defaults() -> None:
    from app.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.auth, args.base, args.library) == ("127.0.0.1", 7860, None, None, None)
    args = build_parser().parse_args(["serve", "--auth", "ann:pa:ss", "--port", "8000"])
    assert args.auth == ("ann", "pa:ss") and args.port == 8000
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--auth", "nopassword"])


def test_serve_warns_on_an_open_host_without_auth(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import app.serve_command as serve
    import app.web.app as web_app
    import app.web.services as services

    class FakeBase:
        name, family, attention = "fake", "toy", "sdpa"

    monkeypatch.setattr(services.MedleyServices, "base", property(lambda self: FakeBase()))
    monkeypatch.setattr(web_app, "launch", lambda svc, options: (None, f"http://{options.host}:{options.port}/"))
    monkeypatch.setattr(serve, "wait_forever", lambda: None)
    from app.cli import build_parser

    args = build_parser().parse_args(["serve", "--host", "0.0.0.0", "--port", "7861"])  # every flag's default
    assert serve._run_serve(args) == 0
    out, err = capsys.readouterr()
    assert "without --auth" in err
    assert "http://0.0.0.0:7861/" in out
    args.host, args.auth = "127.0.0.1", None
    assert serve._run_serve(args) == 0
    assert "without --auth" not in capsys.readouterr().err
