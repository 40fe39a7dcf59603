"""Secret hygiene: after runs with a recognisable token, the token is nowhere.

Searched: the request cache folder, datasets' cache folder (``HF_HOME``) and the mapped dataset's
own cache files, a ``save_to_disk`` folder, the CLI's ``--output`` folder (README, manifest,
data), the card, DEBUG logs of every logger involved, reprs, and the text (and traceback) of
every exception. The Hub token gets the same treatment in the push flows.

On the wire and at the edges: loopback is reached without a proxy and an https endpoint crosses
a proxy only as a CONNECT tunnel (a recording proxy on loopback); a redirect is not followed and
its error drops the Location's credentials and query; a server or Hub that quotes a token back
gets it masked, in the library's errors and in all the CLI prints; the Hub token is never taken
from the command line. Bad base URLs (credentials, query, port) are in test_bad_inputs.py.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
import traceback
from pathlib import Path
from typing import Any

import pytest
from fakehub import LFS_PUT_WARNING_FILTER, FakeHub
from fakehub import fake_hub as fake_hub
from helpers import (
    MODEL_ID,
    PROMPT,
    Answer,
    Received,
    RecordingProxy,
    StubServer,
    cli,
    make_client,
    qa,
    run_expand,
    write_jsonl,
)
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import close_session

from synth_datasets import (
    ConfigurationError,
    SynthClient,
    SynthError,
    SynthMapper,
    get_provenance,
)
from synth_datasets.cache import RequestCache
from synth_datasets.card import build_card
from synth_datasets.cli import main as cli_main
from synth_datasets.hub import push_to_hub
from synth_datasets.testing import Faults, ReferenceServer

# huggingface_hub's own LFS upload warns about its use of httpx; not ours to fix.
pytestmark = pytest.mark.filterwarnings(LFS_PUT_WARNING_FILTER)

TOKEN = "sk-SECRET-" + secrets.token_hex(16)
HF_TOKEN = "hf_SECRET" + secrets.token_hex(16)
LOGGERS = (
    "synth_datasets",
    "urllib3",
    "requests",
    "datasets",
    "huggingface_hub",
    "httpx",
    "httpcore",
    "fsspec",
    "filelock",
    "aiohttp",
    "asyncio",
)


def needles(token: str) -> list[str]:
    """The token, its first and last 8 characters and its random part."""
    random_part = token.split("SECRET", 1)[1].lstrip("-_")
    return [token, token[:8], token[-8:], random_part, random_part[:8]]


def assert_clean(text: str | bytes, where: str, token: str = TOKEN) -> None:
    blob = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    for needle in needles(token):
        assert needle.encode() not in blob, f"{needle!r} found in {where}"


def assert_folder_clean(folder: str | os.PathLike[str], token: str = TOKEN) -> int:
    """Every file's name and bytes; returns how many files were read."""
    count = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            assert_clean(str(path), f"the path {path}", token)
            assert_clean(path.read_bytes(), str(path), token)
            count += 1
    return count


def debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)


def exception_texts(exc: BaseException) -> list[str]:
    """str, repr, the stored body and the full traceback, context chain included."""
    texts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    context: BaseException | None = exc
    while context is not None:
        texts += [str(context), repr(context), repr(getattr(context, "body", None))]
        context = context.__context__ or context.__cause__
    return texts


@pytest.fixture
def server(start_server: Any) -> ReferenceServer:
    faults = Faults(
        rate_500=0.1,
        rate_503=0.05,
        rate_drop=0.05,
        rate_truncate=0.05,
        rate_malformed=0.2,
        rate_alter_original=0.1,
        retry_after=0.01,
        seed=1,
    )
    return start_server(token=TOKEN, faults=faults)  # type: ignore[no-any-return]


def client_for(server: ReferenceServer | str, **kw: Any) -> SynthClient:
    """A client with our token and one retry."""
    return make_client(server, TOKEN, **{"max_retries": 1, **kw})  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------
# The library


def test_expansion_leaves_no_trace_of_the_token(
    server: ReferenceServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    debug_logs(caplog)
    cache_dir = tmp_path / "synth-cache"
    client = client_for(server)
    out = run_expand(
        qa(40),
        client,
        cache_dir,
        on_error="keep",
    )
    assert any(out["error"])  # the faults did produce error rows
    out.save_to_disk(str(tmp_path / "saved"))
    mapper = SynthMapper(prompt=PROMPT, multiplier=2, model_id=MODEL_ID, client=client)
    texts = [
        repr(client),
        str(client),
        repr(mapper),
        repr(mapper.engine),
        mapper.stats.summary(),
        repr(out),
        repr(out.info),
        json.dumps(get_provenance(out)),
        repr(RequestCache(cache_dir)),
        str(build_card(out)),
        json.dumps(out.to_list(), default=str),
    ]
    for i, text in enumerate(texts):
        assert_clean(text, f"text {i}")
    assert assert_folder_clean(cache_dir) >= 1  # requests.sqlite (+ WAL) and the Arrow output
    assert assert_folder_clean(tmp_path / "saved") >= 2
    for cache_file in out.cache_files:
        assert_clean(Path(cache_file["filename"]).read_bytes(), cache_file["filename"])
    assert_folder_clean(os.environ["HF_HOME"])
    assert "Bearer" not in caplog.text and "Authorization" not in caplog.text
    assert_clean(caplog.text, "the DEBUG logs")
    assert len(caplog.text) > 1000  # the logs really were captured


@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        ({"rate_500": 1.0}, "ServerError"),
        ({"rate_429": 1.0}, "RateLimitError"),
        ({"rate_drop": 1.0}, "APIConnectionError"),
        ({"rate_truncate": 1.0}, "ResponseFormatError"),
        ({"script": [422]}, "ValidationError"),
        ({"latency": 30.0}, "APIConnectionError"),  # far past the client's 2 s read timeout
    ],
)
def test_every_failure_text_is_clean(
    server: ReferenceServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    faults: Any,
    expected: Any,
) -> None:
    debug_logs(caplog)
    server.set_faults(Faults(retry_after=0.01, **faults))
    client = client_for(server, timeout=(5.0, 2.0))
    started = time.monotonic()
    with pytest.raises(SynthError) as info:
        run_expand(
            qa(4),
            client,
            tmp_path,
        )
    assert type(info.value).__name__ == expected
    assert time.monotonic() - started < 20  # two tries of 2 s at most, not the server's 30 s
    for text in exception_texts(info.value):
        assert_clean(text, f"the {expected}")
    assert_clean(caplog.text, "the DEBUG logs")


def test_rejected_token_and_bad_configuration_texts_are_clean(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    debug_logs(caplog)
    errors: list[BaseException] = []
    with ReferenceServer(token="sk-other-token") as other:  # our token is the wrong one here
        with pytest.raises(SynthError) as info:
            run_expand(
                qa(2),
                client_for(other.url),
                tmp_path,
            )
        assert type(info.value).__name__ == "AuthenticationError"
        errors.append(info.value)
    for url in ("http://example.com", "example.com", "ftp://example.com"):
        with pytest.raises(ConfigurationError) as bad:
            SynthClient(TOKEN, url)
        errors.append(bad.value)
    with pytest.raises(ConfigurationError) as bad:
        SynthMapper(prompt="", multiplier=2, model_id=MODEL_ID, api_key=TOKEN)
    errors.append(bad.value)
    unreachable = client_for("http://127.0.0.1:9")
    with pytest.raises(SynthError) as info:
        unreachable.generate(model_id=MODEL_ID, prompt=PROMPT, examples=[{"q": "x"}], multiplier=1)
    errors.append(info.value)
    for error in errors:
        for text in exception_texts(error):
            assert_clean(text, type(error).__name__)
    assert_clean(caplog.text, "the DEBUG logs")


def echoing(statuses: list[int]) -> Any:
    """A careless server's answers: its error bodies quote the credentials it was sent."""

    def answer(received: Received) -> Answer:
        auth = received.headers.get("Authorization", "")
        status = statuses.pop(0) if statuses else 401
        if status == 200:  # a 200 that is not the documented shape, quoting the header
            return Answer(200, f"<html>unexpected request with {auth}</html>".encode())
        if status == 0:  # the same, in a body that is not UTF-8 (kept as bytes)
            return Answer(200, b"\xff<html>unexpected request with " + auth.encode() + b"</html>")
        if status == 422:
            detail: Any = [{"loc": ["header", "authorization"], "msg": "bad", "input": auth}]
        else:
            detail = f"credentials {auth!r} are not valid"
        return Answer(status, json.dumps({"detail": detail}).encode())

    return answer


def test_a_server_echoing_the_token_does_not_leak_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    debug_logs(caplog)
    statuses = [401, 422, 500, 200, 0]
    with StubServer(echoing(statuses)) as stub:
        client = client_for(stub.url, max_retries=0)
        out = run_expand(
            qa(5),
            client,
            tmp_path,
            request_size=1,
            max_concurrency=1,
            on_error="keep",
        )
        errors = [e for e in out["error"] if e]
        assert len(errors) == 5
        for text in errors:
            assert_clean(text, "the error column")
        statuses.append(0)
        with pytest.raises(SynthError) as info:
            client.generate(model_id=MODEL_ID, prompt=PROMPT, examples=[{"q": "x"}], multiplier=1)
        for text in exception_texts(info.value):
            assert_clean(text, "the exception")
        assert isinstance(info.value.body, bytes)
        assert_clean(caplog.text, "the DEBUG logs")
        assert [r.method for r in stub.received] == ["GET"] + ["POST"] * 6  # GET /health first
        assert "Authorization" not in stub.received[0].headers


# --------------------------------------------------------------------------------------------
# The token on the wire: never in clear to anything but loopback, proxies included

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@pytest.fixture(autouse=True)
def _fresh_hub_session() -> Any:
    """huggingface_hub keeps one HTTP client, with the proxies of the environment it was made
    in: one made under a test's proxy variables must not outlive that test."""
    yield
    close_session()


def through_proxy(monkeypatch: pytest.MonkeyPatch, url: str, names: Any = PROXY_VARIABLES) -> None:
    """Proxy variables (both spellings) pointing at ``url``; no NO_PROXY exemption."""
    close_session()
    for name in (*PROXY_VARIABLES, "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name in names:
        monkeypatch.setenv(name, url)
        monkeypatch.setenv(name.lower(), url)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_never_goes_through_a_proxy(
    server: ReferenceServer, monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    server.set_faults(Faults())
    with RecordingProxy() as proxy:
        through_proxy(monkeypatch, proxy.url)
        client = client_for(server.url.replace("127.0.0.1", host), max_retries=0)
        gens = client.generate(
            model_id=MODEL_ID, prompt=PROMPT, examples=[{"q": "x"}], multiplier=2
        )
    assert len(gens) == 2
    assert proxy.received == []  # plain http with the token went straight to loopback
    assert server.stats()["requests"] == 1


@pytest.mark.parametrize("names", [PROXY_VARIABLES, ("HTTPS_PROXY",), ("ALL_PROXY",)])
def test_an_https_endpoint_crosses_a_proxy_only_as_a_tunnel(
    monkeypatch: pytest.MonkeyPatch, names: Any
) -> None:
    """A plain-http proxy URL for an https endpoint: the proxy sees CONNECT, never the token."""
    with RecordingProxy() as proxy:
        through_proxy(monkeypatch, proxy.url, names)
        client = client_for("https://api.collinear.invalid", max_retries=0)
        with pytest.raises(SynthError) as info:
            client.generate(model_id=MODEL_ID, prompt=PROMPT, examples=[{"q": "x"}], multiplier=1)
    assert type(info.value).__name__ == "APIConnectionError"
    assert proxy.received  # the proxy was used...
    for data in proxy.received:  # ...as a tunnel only
        assert data.startswith(b"CONNECT api.collinear.invalid:443 "), data[:80]
        assert b"authorization" not in data.lower()
        assert_clean(data, "what the proxy received")


def test_local_runs_work_behind_a_proxy(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = write_jsonl(tmp_path / "seeds.jsonl", qa(3).to_list())
    with RecordingProxy() as proxy:
        through_proxy(monkeypatch, proxy.url)
        args = ["expand", str(source), "--local", "--prompt", PROMPT, "--max-retries", "0"]
        code = cli_main([*args, "--cache-dir", str(tmp_path / "cache")])
    assert code == 0, capsys.readouterr().err
    assert "expanded 3 seed rows into 12 rows" in capsys.readouterr().out
    # Other libraries may probe the internet through it; nothing of ours went there.
    assert not [data for data in proxy.received if not data.startswith(b"CONNECT ")]
    assert not [data for data in proxy.received if b"127.0.0.1" in data or b"Bearer" in data]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize(
    ("location", "shown"),
    [
        (
            "https://alice:pa55word@elsewhere.example:8443/v2/generate?sig=pa55word#pa55word",
            "redirected to https://elsewhere.example:8443/v2/generate?…, not followed",
        ),
        ("/v2/generate?token=pa55word", "redirected to /v2/generate?…, not followed"),
        (None, "redirected to nowhere"),
    ],
    ids=["absolute", "relative", "none"],
)
def test_a_redirect_is_refused_at_once_without_its_secrets(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    status: int,
    location: str | None,
    shown: str,
) -> None:
    """Not followed (the token would go along), not retried; the Location is named without
    credentials, query or fragment, by the library and by the CLI."""
    debug_logs(caplog)
    headers = {"Location": location} if location else {}
    with StubServer(lambda received: Answer(status, b"", headers)) as stub:
        client = client_for(stub.url, max_retries=3)
        with pytest.raises(SynthError) as info:
            client.generate(model_id=MODEL_ID, prompt=PROMPT, examples=[{"q": "x"}], multiplier=1)
        assert len(stub.received) == 1  # sent once
        assert info.value.status_code == status
        assert str(info.value).startswith(f"{status} from 127.0.0.1:") and shown in str(info.value)
        monkeypatch.setenv("COLLINEAR_API_KEY", TOKEN)
        source = write_jsonl(tmp_path / "seeds.jsonl", qa(2).to_list())
        args = ["expand", str(source), "--prompt", PROMPT, "--model-id", MODEL_ID]
        args += ["--base-url", stub.url, "--cache-dir", str(tmp_path / "cache")]
        assert cli_main(["-v", *args]) == 1
        assert [r.method for r in stub.received] == ["POST", "GET", "POST"]  # GET: the engine
    streams = capsys.readouterr()
    assert shown in streams.err and "check --base-url" in streams.err
    for text in [*exception_texts(info.value), streams.out, streams.err, caplog.text]:
        assert "pa55word" not in text and "alice" not in text
        assert_clean(text, "the redirect error")


# --------------------------------------------------------------------------------------------
# The command line and the Hub


def test_cli_output_folder_and_streams_are_clean(
    server: ReferenceServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    debug_logs(caplog)
    monkeypatch.setenv("COLLINEAR_API_KEY", TOKEN)
    source = write_jsonl(tmp_path / "seeds.jsonl", qa(12).to_list())
    output = tmp_path / "out"
    common = ["expand", str(source), "--prompt", PROMPT, "--model-id", MODEL_ID]
    common += ["--base-url", server.url, "--cache-dir", str(tmp_path / "cache")]
    code = cli_main(["-v", *common, "--output", str(output), "--on-error", "keep", "--show", "12"])
    assert code == 0
    assert {p.name for p in output.iterdir()} >= {"README.md", "synth_manifest.json", "data"}
    assert assert_folder_clean(output) >= 3
    assert_folder_clean(tmp_path / "cache")
    assert cli_main([*common, "--dry-run"]) == 0
    server.set_faults(rate_500=1.0)
    assert cli_main(["-v", *common, "--max-retries", "0", "--run-id", "again"]) == 1
    assert cli_main([*common, "--max-retries", "0", "--run-id", "again"]) == 1
    streams = capsys.readouterr()
    assert "Bearer ***" in streams.out  # the dry run shows where the token goes, masked
    assert "Traceback" in streams.err  # -v printed the whole traceback
    assert_clean(streams.out, "stdout")
    assert_clean(streams.err, "stderr")
    assert_clean(caplog.text, "the DEBUG logs")


def test_push_flows_leave_no_trace_of_either_token(
    fake_hub: FakeHub,
    server: ReferenceServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    debug_logs(caplog)
    out = run_expand(
        qa(8),
        client_for(server),
        tmp_path / "cache",
        on_error="keep",
    )
    # The reference server's rows: published on purpose here.
    push_to_hub(out, "me/synth", token=HF_TOKEN, allow_offline_data=True)
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    push_to_hub(out.select(range(4)), "me/synth", split="test", allow_offline_data=True)
    # The CLI: an --output folder pushed with --hf-token-file.
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("COLLINEAR_API_KEY", TOKEN)
    source = write_jsonl(tmp_path / "seeds.jsonl", qa(4).to_list())
    folder = tmp_path / "out"
    args = ["expand", str(source), "--prompt", PROMPT, "--model-id", MODEL_ID, "--on-error"]
    args += ["keep", "--base-url", server.url, "--output", str(folder)]
    assert cli_main(["-v", *args, "--cache-dir", str(tmp_path / "cache")]) == 0
    token_file = tmp_path / "hf-token"
    token_file.write_text(HF_TOKEN)
    push = [
        "push",
        str(folder),
        "me/cli",
        "--hf-token-file",
        str(token_file),
        "--allow-offline-data",
    ]
    assert cli_main(["-v", *push]) == 0
    # A token the Hub refuses: the error does not quote it.
    refused = "xx_SECRET" + secrets.token_hex(16)
    with pytest.raises(HfHubHTTPError) as info:  # huggingface_hub's own: the Hub said 401
        push_to_hub(out, "me/other", token=refused, allow_offline_data=True)
    for text in exception_texts(info.value):
        assert_clean(text, "the Hub error", refused)

    streams = capsys.readouterr()
    for token in (TOKEN, HF_TOKEN):
        for repo in ("me/synth", "me/cli"):
            for path, content in fake_hub.files(repo).items():
                assert_clean(path, f"{repo}/{path}", token)
                assert_clean(content, f"{repo}/{path}", token)
        for method, path, _headers in fake_hub.requests:
            assert_clean(path, f"{method} {path}", token)
        assert_clean(streams.out + streams.err, "the CLI streams", token)
        assert_clean(caplog.text, "the DEBUG logs", token)
        assert_folder_clean(folder, token)
        assert_folder_clean(os.environ["HF_HOME"], token)
    # The Hub token did travel, in the Authorization header only.
    assert any(h.get("authorization") == f"Bearer {HF_TOKEN}" for _m, _p, h in fake_hub.requests)


def test_a_hub_quoting_the_token_back_gets_it_masked(
    fake_hub: FakeHub,
    server: ReferenceServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its errors say "Bearer ***", from the library and from every CLI path that reaches it."""
    debug_logs(caplog)
    server.set_faults(Faults())
    out = run_expand(qa(4), client_for(server), tmp_path / "cache")
    monkeypatch.setenv("COLLINEAR_API_KEY", TOKEN)
    source = write_jsonl(tmp_path / "seeds.jsonl", qa(4).to_list())
    folder = tmp_path / "out"
    args = ["expand", str(source), "--prompt", PROMPT, "--model-id", MODEL_ID]
    args += ["--base-url", server.url, "--cache-dir", str(tmp_path / "cache")]
    assert cli_main([*args, "--output", str(folder)]) == 0
    token_file = tmp_path / "hf-token"
    token_file.write_text(HF_TOKEN + "\n")
    fake_hub.echo_credentials = True

    with pytest.raises(HfHubHTTPError) as info:
        push_to_hub(out, "me/echo", token=HF_TOKEN, allow_offline_data=True)
    assert "Bearer ***" in str(info.value)
    for text in exception_texts(info.value):
        assert_clean(text, "the Hub error", HF_TOKEN)
    capsys.readouterr()
    caplog.clear()  # httpcore's DEBUG log of the answer's headers quotes it: the CLI masks it
    assert (
        cli_main(
            [
                "-v",
                "push",
                str(folder),
                "me/echo",
                "--hf-token-file",
                str(token_file),
                "--allow-offline-data",
            ]
        )
        == 1
    )
    assert (
        cli_main(
            [
                *args,
                "--push-to-hub",
                "me/echo",
                "--hf-token-file",
                str(token_file),
                "--allow-offline-data",
            ]
        )
        == 1
    )
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    assert cli_main(["push", str(folder), "me/echo", "--allow-offline-data"]) == 1
    seeds_from_hub = ["expand", "me/seeds", "--local", "--prompt", PROMPT]
    assert cli_main(["-v", *seeds_from_hub, "--cache-dir", str(tmp_path / "cache")]) == 1
    streams = capsys.readouterr()
    assert streams.err.count("Bearer ***") >= 4, streams.err
    for text in (streams.out, streams.err, caplog.text):
        assert_clean(text, "the CLI streams and logs", HF_TOKEN)
    # The command as a user runs it: its own stderr, DEBUG logs included.
    proc = cli(
        "-v", "push", str(folder), "me/echo", "--allow-offline-data", env={"HF_TOKEN": HF_TOKEN}
    )
    assert proc.returncode == 1 and "Bearer ***" in proc.stderr
    assert_clean(proc.stdout + proc.stderr, "the CLI subprocess", HF_TOKEN)
    assert len(fake_hub.requests) >= 5


def test_the_hub_token_is_never_taken_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_hub: FakeHub
) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    for argv in (
        ["push", str(folder), "me/x", "--hf-token", HF_TOKEN],
        ["push", str(folder), "me/x", f"--hf-token={HF_TOKEN}"],
        ["card", str(folder), "--hf-token", HF_TOKEN],
    ):
        with pytest.raises(SystemExit) as info:
            cli_main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert "argument --hf-token: refused" in err and "--hf-token-file" in err
        assert_clean(err, "the refusal", HF_TOKEN)
    bad_files = {"missing": None, "empty": "\n", "two-lines": f"{HF_TOKEN}\nhf_other\n"}
    for name, text in bad_files.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        with pytest.raises(SystemExit) as info:
            cli_main(["push", str(folder), "me/x", "--hf-token-file", str(path)])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert "argument --hf-token-file: " in err and str(path) in err
        assert_clean(err, f"the {name} token file error", HF_TOKEN)
    help_text = cli("push", "--help").stdout
    assert "--hf-token-file PATH" in help_text and "HF_TOKEN" in help_text
    assert "--hf-token " not in help_text
    assert fake_hub.requests == []
