"""push_to_hub against the HTTP-level fake Hub: real huggingface_hub and datasets code."""

from __future__ import annotations

import datasets
import pytest
import yaml
from conftest import HUB_TOKEN, MODEL_ID
from datasets import Dataset
from fakehub import LFS_PUT_WARNING_FILTER

from synth_datasets import ConfigurationError, expand
from synth_datasets.hub import push_to_hub

# huggingface_hub's own LFS upload warns about its use of httpx; not ours to fix.
pytestmark = pytest.mark.filterwarnings(LFS_PUT_WARNING_FILTER)


@pytest.fixture
def expanded(ref_client, cache_dir):
    seeds = Dataset.from_list([{"q": f"question {i}", "a": f"answer {i}"} for i in range(4)])
    return expand(
        seeds,
        prompt="More.",
        multiplier=2,
        model_id=MODEL_ID,
        client=ref_client,
        cache_dir=cache_dir,
    )


def readme(fake_hub, repo="me/synth"):
    text = fake_hub.files(repo)["README.md"].decode()
    _, header, body = text.split("---\n", 2)
    return yaml.safe_load(header), body


def test_push_creates_repo_with_data_and_card(fake_hub, expanded):
    push_to_hub(expanded, "me/synth", token=HUB_TOKEN)
    repo = fake_hub.repos["me/synth"]
    assert repo.private is True
    files = fake_hub.files("me/synth")
    assert any(p.startswith("data/train-") and p.endswith(".parquet") for p in files)
    meta, body = readme(fake_hub)
    assert "## How it was made" in body and "synthetic" in meta["tags"]
    assert meta["dataset_info"]["splits"][0]["name"] == "train"  # merged in by datasets
    assert meta["configs"][0]["config_name"] == "default"
    loaded = datasets.load_dataset("me/synth", split="train", token=HUB_TOKEN)
    assert loaded.to_list() == expanded.to_list()
    # Only the Authorization header ever carried the token.
    for _method, path, headers in fake_hub.requests:
        assert HUB_TOKEN not in path
        for name, value in headers.items():
            if name.lower() == "authorization":
                assert value == f"Bearer {HUB_TOKEN}"
            else:
                assert HUB_TOKEN not in value
    for content in files.values():
        assert HUB_TOKEN.encode() not in content


def test_second_split_keeps_card_and_both_load(fake_hub, expanded):
    push_to_hub(expanded, "me/synth", token=HUB_TOKEN)
    _, body_before = readme(fake_hub)
    push_to_hub(expanded.select(range(3)), "me/synth", token=HUB_TOKEN, split="test")
    meta, body = readme(fake_hub)
    assert body == body_before
    assert {s["name"] for s in meta["dataset_info"]["splits"]} == {"train", "test"}
    ds = datasets.load_dataset("me/synth", token=HUB_TOKEN)
    assert len(ds["train"]) == len(expanded) and len(ds["test"]) == 3


def test_push_to_branch_keeps_its_card(fake_hub, expanded):
    # DatasetCard.load takes no revision: the card already on the branch is read another way.
    push_to_hub(expanded, "me/synth", token=HUB_TOKEN, revision="dev")
    files = fake_hub.files("me/synth", revision="dev")
    assert "README.md" in files
    assert any(p.startswith("data/train-") for p in files)
    card_before = files["README.md"]
    push_to_hub(
        expanded.select(range(3)), "me/synth", token=HUB_TOKEN, revision="dev", split="test"
    )
    files = fake_hub.files("me/synth", revision="dev")
    _, body_before = card_before.decode().split("---\n", 2)[1:]
    _, body = files["README.md"].decode().split("---\n", 2)[1:]
    assert body == body_before


def test_public_push_reaches_server(fake_hub, expanded):
    push_to_hub(expanded, "me/public", token=HUB_TOKEN, private=False)
    assert fake_hub.repos["me/public"].private is False


def test_token_from_environment(fake_hub, expanded, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    push_to_hub(expanded, "me/synth")
    assert "README.md" in fake_hub.files("me/synth")


@pytest.mark.parametrize("repo_id", ["no spaces/allowed", "a/b/c", "", "me/--bad--", "justname"])
def test_malformed_repo_id_refused_before_upload(fake_hub, expanded, repo_id):
    with pytest.raises(ConfigurationError, match="repo"):
        push_to_hub(expanded, repo_id, token=HUB_TOKEN)
    assert fake_hub.requests == []


def test_missing_token_refused_before_upload(fake_hub, expanded, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(ConfigurationError, match="HF_TOKEN"):
        push_to_hub(expanded, "me/synth")
    assert fake_hub.requests == [] and fake_hub.repos == {}
