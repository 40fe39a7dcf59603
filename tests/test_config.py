"""Every entry point takes every option of the one config, with its name and default."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
from helpers import MODEL_ID

from synth_datasets import ConfigurationError, SynthClient, SynthMapper, __version__, expand
from synth_datasets.config import (
    ClientConfig,
    ExpandConfig,
    announce_engine,
    flag,
    option_fields,
    parse_engine,
)
from synth_datasets.ray import expand_ray

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = {f.name: f for f in option_fields(ExpandConfig)}

# What an entry point leaves out on purpose, and why.
GAPS = {
    "expand_ray": {"index_column"},  # Ray numbers the rows itself
}


def keyword_options(fn: object) -> dict[str, object]:
    return {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()  # type: ignore[arg-type]
        if p.kind is p.KEYWORD_ONLY
    }


@pytest.mark.parametrize(
    "name, fn", [("expand", expand), ("SynthMapper", SynthMapper), ("expand_ray", expand_ray)]
)
def test_entry_points_take_every_option_with_its_default(name, fn):
    taken = keyword_options(fn)
    missing = set(OPTIONS) - set(taken) - GAPS.get(name, set())
    assert not missing, f"{name} lacks {sorted(missing)}"
    for option, default in taken.items():
        if option in OPTIONS:
            f = OPTIONS[option]
            expected = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
            assert default == expected, f"{name}({option}=) defaults to {default!r}"
    assert set(OPTIONS) & set(inspect.signature(fn).parameters) <= set(taken)


def test_help_lists_every_option():
    for fn in (expand, SynthMapper, expand_ray):
        text = inspect.getdoc(fn) or ""
        for option in set(OPTIONS) - GAPS.get(getattr(fn, "__name__", ""), set()):
            assert f"{option}: " in text, option


def test_client_takes_every_client_option():
    taken = keyword_options(SynthClient)
    assert {f.name for f in dataclasses.fields(ClientConfig)} - {"base_url"} <= set(taken)
    assert list(inspect.signature(SynthClient).parameters)[:2] == ["api_key", "base_url"]


def test_an_option_is_spelled_as_its_flag_on_the_command_line():
    assert flag("model_id") == "--model-id"
    assert (flag("progress"), flag("keep_original")) == ("--quiet", "--no-original")
    # A keyword that is no option of the config (a publishing one) is spelled the same way.
    assert flag("allow_offline_data") == "--allow-offline-data"


def test_the_config_checks_itself_once_naming_the_option():
    with pytest.raises(ConfigurationError, match="request_size must be an int >= 1") as info:
        ExpandConfig(prompt="p", multiplier=2, model_id=MODEL_ID, request_size=0)
    assert info.value.option == "request_size"
    config = ExpandConfig(prompt="p", multiplier=2, model_id=MODEL_ID, timeout=30)
    assert config.timeout == (10.0, 30.0)
    with pytest.raises(ConfigurationError, match="max_retries"):
        dataclasses.replace(config, max_retries=-1)
    for bad in [(0, 0), (5, 0), 0]:
        with pytest.raises(ConfigurationError, match="timeout must be > 0"):
            dataclasses.replace(config, timeout=bad)
    with pytest.raises(ConfigurationError, match="base_url must start with https://"):
        dataclasses.replace(config, base_url="")


def test_a_replaced_config_derives_its_map_batch_anew():
    config = ExpandConfig(prompt="p", multiplier=2, model_id=MODEL_ID, request_size=8)
    assert config.map_batch_size == 8 * 64  # about 1024 output rows a map call
    wider = dataclasses.replace(config, multiplier=64)
    assert wider.map_batch_size == 8 * 2
    assert dataclasses.replace(wider, requests_per_map_batch=5).map_batch_size == 40


def test_client_options_beside_a_client_are_refused(ref_client):
    with pytest.raises(ConfigurationError, match="max_retries and client= are both given"):
        SynthMapper(prompt="p", multiplier=2, model_id=MODEL_ID, client=ref_client, max_retries=1)


def test_fingerprint_follows_what_changes_rows_only():
    base = ExpandConfig(prompt="p", multiplier=2, model_id=MODEL_ID)
    assert (
        base.fingerprint()
        == dataclasses.replace(base, max_concurrency=64, max_retries=0).fingerprint()
    )
    assert base.fingerprint() != dataclasses.replace(base, run_id="again").fingerprint()
    assert base.fingerprint() != dataclasses.replace(base, prompt="q").fingerprint()


@pytest.mark.parametrize(
    "params",
    [{}, {"model": "Qwen/Qwen2.5-7B-Instruct", "host": "127.0.0.1:8000"}, {"model": "a; b=c é"}],
)
def test_an_engine_announcement_reads_back(params: dict[str, str]) -> None:
    value = announce_engine("some-engine", **params)
    value.encode("ascii")  # a header value
    assert parse_engine(value) == {"engine": "some-engine", "version": __version__, **params}
    assert parse_engine(None) == {}


def test_max_concurrency_is_a_number_or_auto_with_a_ceiling():
    config = ExpandConfig(prompt="p", multiplier=2, model_id=MODEL_ID, max_concurrency="auto")
    assert (config.max_concurrency, config.threads) == ("auto", 64)
    assert dataclasses.replace(config, concurrency_ceiling=8).threads == 8
    assert dataclasses.replace(config, max_concurrency=5).threads == 5
    for bad in ("Auto", "16", 0, True, 2.5):
        with pytest.raises(
            ConfigurationError, match="max_concurrency must be an int >= 1 or 'auto'"
        ):
            dataclasses.replace(config, max_concurrency=bad)
    with pytest.raises(ConfigurationError, match="concurrency_ceiling must be an int >= 1"):
        dataclasses.replace(config, concurrency_ceiling=0)
