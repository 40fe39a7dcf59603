"""push_to_hub against the HTTP-level fake Hub: real huggingface_hub and datasets code.

The rows come from the reference server, whose offline engine the pushes must be allowed to
publish (``allow_offline_data=True``, in ``push`` below) except where that refusal is the test.
"""

from __future__ import annotations

import logging

import datasets
import pytest
from fakehub import HUB_TOKEN, LFS_PUT_WARNING_FILTER
from helpers import MODEL_ID, PROMPT, card_yaml, qa, run_expand

import synth_datasets
from synth_datasets import ConfigurationError, get_provenance, quality_report

# huggingface_hub's own LFS upload warns about its use of httpx; not ours to fix.
pytestmark = pytest.mark.filterwarnings(LFS_PUT_WARNING_FILTER)


@pytest.fixture
def expanded(ref_client, cache_dir):
    return run_expand(qa(4), ref_client, cache_dir)


def push_to_hub(dataset, repo_id, **kw):
    """The library's push with the token, allowed to publish the offline engine's rows."""
    kw.setdefault("token", HUB_TOKEN)
    kw.setdefault("allow_offline_data", True)
    return synth_datasets.push_to_hub(dataset, repo_id, **kw)


def readme(fake_hub, repo="me/synth", revision="main"):
    return card_yaml(fake_hub.files(repo, revision)["README.md"])


def test_push_creates_repo_with_data_and_card(fake_hub, expanded):
    result = push_to_hub(expanded, "me/synth")
    assert result.card == "written" and result.rows == 8
    assert result.summary().startswith("pushed 8 rows and the dataset card to ")
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
    push_to_hub(expanded, "me/synth")
    _, body_before = readme(fake_hub)
    push_to_hub(expanded.select(range(3)), "me/synth", split="test")
    meta, body = readme(fake_hub)
    assert body == body_before
    assert {s["name"] for s in meta["dataset_info"]["splits"]} == {"train", "test"}
    ds = datasets.load_dataset("me/synth", token=HUB_TOKEN)
    assert len(ds["train"]) == len(expanded) and len(ds["test"]) == 3


def test_push_to_branch_keeps_its_card(fake_hub, expanded):
    # DatasetCard.load takes no revision: the card already on the branch is read another way.
    push_to_hub(expanded, "me/synth", revision="dev")
    files = fake_hub.files("me/synth", revision="dev")
    assert "README.md" in files
    assert any(p.startswith("data/train-") for p in files)
    card_before = files["README.md"]
    push_to_hub(expanded.select(range(3)), "me/synth", revision="dev", split="test")
    files = fake_hub.files("me/synth", revision="dev")
    _, body_before = card_before.decode().split("---\n", 2)[1:]
    _, body = files["README.md"].decode().split("---\n", 2)[1:]
    assert body == body_before


def test_public_push_reaches_server(fake_hub, expanded):
    push_to_hub(expanded, "me/public", private=False)
    assert fake_hub.repos["me/public"].private is False


def test_token_from_environment(fake_hub, expanded, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    push_to_hub(expanded, "me/synth", token=None)
    assert "README.md" in fake_hub.files("me/synth")


@pytest.mark.parametrize("repo_id", ["no spaces/allowed", "a/b/c", "", "me/--bad--", "justname"])
def test_malformed_repo_id_refused_before_upload(fake_hub, expanded, repo_id):
    with pytest.raises(ConfigurationError, match="repo"):
        push_to_hub(expanded, repo_id)
    assert fake_hub.requests == []


def test_missing_token_refused_before_upload(fake_hub, expanded, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(ConfigurationError, match="HF_TOKEN"):
        push_to_hub(expanded, "me/synth", token=None)
    assert fake_hub.requests == [] and fake_hub.repos == {}


# --------------------------------------------------------------------------------------------
# revision=, create_pr=, commit_message=, max_shard_size=: what reached the Hub


def test_revision_puts_card_and_data_on_that_branch_only(fake_hub, expanded):
    # Found by this test: push_to_hub(revision=...) raised TypeError (DatasetCard.load takes no
    # revision in huggingface_hub 2.x); hub.py now downloads that revision's README itself.
    push_to_hub(expanded, "me/synth", revision="dev")
    dev = fake_hub.files("me/synth", "dev")
    assert "data/train-00000-of-00001.parquet" in dev
    meta, body = readme(fake_hub, revision="dev")
    assert "## How it was made" in body and "dataset_info" in meta
    assert set(fake_hub.files("me/synth")) == {".gitattributes"}  # main untouched
    loaded = datasets.load_dataset("me/synth", revision="dev", split="train", token=HUB_TOKEN)
    assert loaded.to_list() == expanded.to_list()
    # A second split on the same branch keeps that branch's card.
    push_to_hub(expanded.select(range(2)), "me/synth", revision="dev", split="t")
    assert readme(fake_hub, revision="dev")[1] == body
    assert "data/t-00000-of-00001.parquet" in fake_hub.files("me/synth", "dev")


def test_create_pr_on_a_published_repo_opens_one_pr_and_leaves_main_alone(fake_hub, expanded):
    push_to_hub(expanded, "me/synth")
    main_before = fake_hub.files("me/synth")
    push_to_hub(expanded.select(range(3)), "me/synth", split="test", create_pr=True)
    assert fake_hub.files("me/synth") == main_before
    assert list(fake_hub.repos["me/synth"].pull_requests) == [1]
    pr = fake_hub.files("me/synth", "refs/pr/1")
    assert "data/test-00000-of-00001.parquet" in pr and "data/train-00000-of-00001.parquet" in pr
    meta, body = readme(fake_hub, revision="refs/pr/1")
    assert body == readme(fake_hub)[1]  # the published card, with the new split merged in
    assert {s["name"] for s in meta["dataset_info"]["splits"]} == {"train", "test"}
    test = datasets.load_dataset("me/synth", revision="refs/pr/1", split="test", token=HUB_TOKEN)
    assert len(test) == 3


def test_create_pr_on_a_new_repo_puts_card_and_data_in_one_pr(fake_hub, expanded):
    result = push_to_hub(expanded, "me/fresh", create_pr=True)
    assert set(fake_hub.files("me/fresh")) == {".gitattributes"}
    assert list(fake_hub.repos["me/fresh"].pull_requests) == [1]
    assert result.pr_url is not None and result.pr_url.endswith("/discussions/1")
    pr = fake_hub.files("me/fresh", "refs/pr/1")
    assert "data/train-00000-of-00001.parquet" in pr
    meta, body = readme(fake_hub, "me/fresh", "refs/pr/1")
    assert "## How it was made" in body and meta["configs"][0]["config_name"] == "default"
    loaded = datasets.load_dataset("me/fresh", revision="refs/pr/1", split="train", token=HUB_TOKEN)
    assert get_provenance(loaded) == get_provenance(expanded)


def test_commit_message_names_the_card_and_data_commits(fake_hub, expanded):
    push_to_hub(expanded, "me/synth", commit_message="Synthetic set v1")
    messages = [c.message for c in fake_hub.commits("me/synth")]
    assert messages == ["initial commit", "Synthetic set v1", "Synthetic set v1 (card)"]
    push_to_hub(expanded, "me/other")  # the defaults
    messages = [c.message for c in fake_hub.commits("me/other")]
    assert messages == ["initial commit", "Upload train split (8 rows)", "Add dataset card (card)"]


def test_max_shard_size_cuts_the_data_into_shards(fake_hub, expanded):
    push_to_hub(expanded, "me/synth", max_shard_size=500)
    shards = sorted(p for p in fake_hub.files("me/synth") if p.startswith("data/train-"))
    assert len(shards) > 1
    assert shards[0] == f"data/train-00000-of-{len(shards):05d}.parquet"
    loaded = datasets.load_dataset("me/synth", split="train", token=HUB_TOKEN)
    assert sorted(loaded.to_list(), key=str) == sorted(expanded.to_list(), key=str)


# --------------------------------------------------------------------------------------------
# a README already in the repo: this library's card, datasets' default, one written by hand


def test_a_card_this_library_wrote_is_refreshed(fake_hub, expanded):
    push_to_hub(expanded, "me/synth")
    result = push_to_hub(expanded.select(range(5)), "me/synth")
    assert result.card == "refreshed"
    assert "refreshed the dataset card" in result.summary()
    meta, body = readme(fake_hub)
    assert "5 synthetic rows" in body and "8 synthetic rows" not in body
    assert meta["dataset_info"]["splits"][0]["num_examples"] == 5


def test_datasets_default_readme_is_replaced_by_the_card(fake_hub, expanded):
    expanded.push_to_hub("me/synth", token=HUB_TOKEN)  # datasets' own: YAML only
    meta, body = readme(fake_hub)
    assert body.strip() == "" and set(meta) == {"dataset_info", "configs"}
    result = push_to_hub(expanded, "me/synth")
    assert result.card == "replaced"
    assert "in place of datasets' default README" in result.summary()
    meta, body = readme(fake_hub)
    assert "## How it was made" in body and meta["configs"][0]["config_name"] == "default"
    assert meta["dataset_info"]["splits"][0]["num_examples"] == 8


HAND_WRITTEN = b"---\nlicense: mit\n---\n# My dataset\n\nWritten by hand.\n"


def test_a_hand_written_card_is_kept_and_the_output_says_so(fake_hub, expanded):
    fake_hub.add_repo("me/synth", {"README.md": HAND_WRITTEN}, private=True)
    result = push_to_hub(expanded, "me/synth")
    assert result.card == "kept" and result.kept_card == "hand-written"
    summary = result.summary("--overwrite-card")
    assert "kept the existing hand-written dataset card (pass --overwrite-card to replace it)" in (
        summary
    )
    assert "and the dataset card" not in summary
    meta, body = readme(fake_hub)
    assert body == "# My dataset\n\nWritten by hand.\n" and meta["license"] == "mit"
    assert meta["dataset_info"]["splits"][0]["num_examples"] == 8  # datasets merged its YAML
    assert len(datasets.load_dataset("me/synth", split="train", token=HUB_TOKEN)) == 8

    result = push_to_hub(expanded, "me/synth", overwrite_card=True)
    assert result.card == "overwritten"
    meta, body = readme(fake_hub)
    assert "Written by hand" not in body and "## How it was made" in body
    assert meta["dataset_info"]["splits"][0]["num_examples"] == 8


def test_a_card_of_another_split_is_kept_with_its_record(fake_hub, expanded):
    push_to_hub(expanded, "me/synth")
    result = push_to_hub(expanded.select(range(3)), "me/synth", split="test")
    assert result.card == "kept" and result.kept_card == "split train"
    assert "kept the dataset card, which describes split train" in result.summary()
    train = datasets.load_dataset("me/synth", split="train", token=HUB_TOKEN)
    assert get_provenance(train) == get_provenance(expanded)  # datasets' push dropped it: restored


# --------------------------------------------------------------------------------------------
# provenance through the Hub, and the card of a pushed copy


def test_provenance_survives_the_hub_round_trip(fake_hub, expanded):
    push_to_hub(expanded, "me/synth")
    loaded = datasets.load_dataset("me/synth", split="train", token=HUB_TOKEN)
    assert get_provenance(loaded) == get_provenance(expanded)
    report = quality_report(loaded)
    assert report.source_rows == 4 and report.targeted == 8 and report.multiplier == 2
    # The published record leaves the prompt out when the card does.
    push_to_hub(expanded, "me/quiet", include_prompt=False)
    quiet = datasets.load_dataset("me/quiet", split="train", token=HUB_TOKEN)
    recorded = get_provenance(quiet)
    assert recorded is not None and "prompt" not in recorded
    assert PROMPT.encode() not in fake_hub.files("me/quiet")["README.md"]


def test_a_pushed_copy_of_a_reloaded_dataset_has_the_full_card(fake_hub, expanded):
    push_to_hub(expanded, "me/synth")
    reloaded = datasets.load_dataset("me/synth", split="train", token=HUB_TOKEN)
    push_to_hub(reloaded.filter(lambda row: row["error"] is None), "me/copy")
    meta, body = readme(fake_hub, "me/copy")
    assert f"| Model | `{MODEL_ID}` |" in body and PROMPT in body
    assert "| Seed rows in the source | 4 |" in body
    assert "| Generations targeted / returned | 8 / 8 |" in body
    assert meta["pretty_name"] == "copy"


# --------------------------------------------------------------------------------------------
# rows of the offline engine


def test_offline_rows_are_refused_before_anything_is_uploaded(fake_hub, expanded):
    assert get_provenance(expanded)["generator"].startswith("synth_datasets-offline/")
    with pytest.raises(ConfigurationError, match="allow_offline_data=True") as caught:
        synth_datasets.push_to_hub(expanded, "me/synth", token=HUB_TOKEN)
    assert "offline rewriting engine bundled with synth_datasets, not by Collinear" in str(
        caught.value
    )
    assert "\n" not in str(caught.value)
    assert fake_hub.requests == [] and fake_hub.repos == {}


def test_the_card_of_offline_rows_says_so_first(fake_hub, expanded):
    result = push_to_hub(expanded, "me/synth")
    assert result.offline
    _, body = readme(fake_hub)
    first = [line for line in body.splitlines() if line.strip()][:3]
    assert first[0].startswith("<!-- synth_datasets card ")
    assert first[1] == "# synth"
    assert "generated by the offline rewriting engine bundled with synth_datasets" in first[2]
    assert "Collinear's synthetic-data endpoint" not in body


def test_no_num_proc_notice_on_a_push(fake_hub, expanded):
    """datasets' "Setting num_proc from 1 back to 1" (no num_proc was given) is not shown."""
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    library, keep = logging.getLogger("datasets"), Keep()
    level = library.level
    library.addHandler(keep)
    library.setLevel(logging.WARNING)
    try:
        expanded.push_to_hub("me/plain", token=HUB_TOKEN)  # datasets' own push says it
        assert any("Setting num_proc from 1 back to 1" in m for m in seen)
        seen.clear()
        push_to_hub(expanded, "me/synth")
    finally:
        library.removeHandler(keep)
        library.setLevel(level)
    assert not [m for m in seen if "num_proc" in m]
