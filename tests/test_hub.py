"""push_to_hub against the HTTP-level fake Hub: real huggingface_hub and datasets code."""

from __future__ import annotations

import datasets
import pytest
from fakehub import HUB_TOKEN, LFS_PUT_WARNING_FILTER
from helpers import card_yaml, qa, run_expand

from synth_datasets import ConfigurationError
from synth_datasets.hub import push_to_hub

# huggingface_hub's own LFS upload warns about its use of httpx; not ours to fix.
pytestmark = pytest.mark.filterwarnings(LFS_PUT_WARNING_FILTER)


@pytest.fixture
def expanded(ref_client, cache_dir):
    return run_expand(qa(4), ref_client, cache_dir)


def readme(fake_hub, repo="me/synth", revision="main"):
    return card_yaml(fake_hub.files(repo, revision)["README.md"])


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


# --------------------------------------------------------------------------------------------
# revision=, create_pr=, commit_message=, max_shard_size=: what reached the Hub


def test_revision_puts_card_and_data_on_that_branch_only(fake_hub, expanded):
    # Found by this test: push_to_hub(revision=...) raised TypeError (DatasetCard.load takes no
    # revision in huggingface_hub 2.x); hub.py now downloads that revision's README itself.
    push_to_hub(expanded, "me/synth", token=HUB_TOKEN, revision="dev")
    dev = fake_hub.files("me/synth", "dev")
    assert "data/train-00000-of-00001.parquet" in dev
    meta, body = readme(fake_hub, revision="dev")
    assert "## How it was made" in body and "dataset_info" in meta
    assert set(fake_hub.files("me/synth")) == {".gitattributes"}  # main untouched
    loaded = datasets.load_dataset("me/synth", revision="dev", split="train", token=HUB_TOKEN)
    assert loaded.to_list() == expanded.to_list()
    # A second split on the same branch keeps that branch's card.
    push_to_hub(expanded.select(range(2)), "me/synth", token=HUB_TOKEN, revision="dev", split="t")
    assert readme(fake_hub, revision="dev")[1] == body
    assert "data/t-00000-of-00001.parquet" in fake_hub.files("me/synth", "dev")


def test_create_pr_on_a_published_repo_opens_one_pr_and_leaves_main_alone(fake_hub, expanded):
    push_to_hub(expanded, "me/synth", token=HUB_TOKEN)
    main_before = fake_hub.files("me/synth")
    push_to_hub(
        expanded.select(range(3)), "me/synth", token=HUB_TOKEN, split="test", create_pr=True
    )
    assert fake_hub.files("me/synth") == main_before
    assert list(fake_hub.repos["me/synth"].pull_requests) == [1]
    pr = fake_hub.files("me/synth", "refs/pr/1")
    assert "data/test-00000-of-00001.parquet" in pr and "data/train-00000-of-00001.parquet" in pr
    meta, body = readme(fake_hub, revision="refs/pr/1")
    assert body == readme(fake_hub)[1]  # the published card, with the new split merged in
    assert {s["name"] for s in meta["dataset_info"]["splits"]} == {"train", "test"}
    test = datasets.load_dataset("me/synth", revision="refs/pr/1", split="test", token=HUB_TOKEN)
    assert len(test) == 3


@pytest.mark.xfail(
    strict=True,
    reason="library bug: on a repo without a card, create_pr=True opens one PR with the card "
    "and a second with the data, whose README is datasets' own (no card text)",
)
def test_create_pr_on_a_new_repo_puts_card_and_data_in_one_pr(fake_hub, expanded):
    push_to_hub(expanded, "me/fresh", token=HUB_TOKEN, create_pr=True)
    assert set(fake_hub.files("me/fresh")) == {".gitattributes"}
    assert list(fake_hub.repos["me/fresh"].pull_requests) == [1]
    pr = fake_hub.files("me/fresh", "refs/pr/1")
    assert "data/train-00000-of-00001.parquet" in pr
    assert "## How it was made" in readme(fake_hub, "me/fresh", "refs/pr/1")[1]


def test_commit_message_names_the_card_and_data_commits(fake_hub, expanded):
    push_to_hub(expanded, "me/synth", token=HUB_TOKEN, commit_message="Synthetic set v1")
    messages = [c.message for c in fake_hub.commits("me/synth")]
    assert messages == ["initial commit", "Synthetic set v1 (card)", "Synthetic set v1"]
    push_to_hub(expanded, "me/other", token=HUB_TOKEN)  # the defaults
    messages = [c.message for c in fake_hub.commits("me/other")]
    assert messages == ["initial commit", "Add dataset card (card)", "Upload train split (8 rows)"]


def test_max_shard_size_cuts_the_data_into_shards(fake_hub, expanded):
    push_to_hub(expanded, "me/synth", token=HUB_TOKEN, max_shard_size=500)
    shards = sorted(p for p in fake_hub.files("me/synth") if p.startswith("data/train-"))
    assert len(shards) > 1
    assert shards[0] == f"data/train-00000-of-{len(shards):05d}.parquet"
    loaded = datasets.load_dataset("me/synth", split="train", token=HUB_TOKEN)
    assert sorted(loaded.to_list(), key=str) == sorted(expanded.to_list(), key=str)
