"""The fake Hub is faithful enough for the real client libraries, unpatched.

Every test drives `datasets` / `huggingface_hub` exactly as user code would; the only thing
that differs from production is the endpoint, set by conftest.py before they were imported.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from datasets import Dataset, load_dataset
from datasets.exceptions import DatasetNotFoundError
from fakehub import HUB_TOKEN, INVALID_CREDENTIALS, LFS_PUT_WARNING_FILTER, FakeHub
from fakehub import fake_hub as fake_hub
from helpers import card_yaml
from huggingface_hub import (
    CommitOperationAdd,
    DatasetCard,
    DatasetCardData,
    HfApi,
    hf_hub_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

# huggingface_hub's LFS PUT passes a file with `data=` (see fakehub.LFS_PUT_WARNING_FILTER).
pytestmark = pytest.mark.filterwarnings(LFS_PUT_WARNING_FILTER)

REPO = "tester/demo"
ROWS = {"id": [1, 2, 3], "text": ["alpha", "beta", "gamma"]}
TEST_ROWS = {"id": [10, 11], "text": ["delta", "epsilon"]}
CARD_BODY = "# Demo dataset\n\nHand-written body text that must survive data pushes."


def _endpoint() -> str:
    return os.environ["HF_ENDPOINT"]


def _front_matter(readme: bytes) -> dict[str, Any]:
    return card_yaml(readme)[0]


def _push_card(repo_id: str = REPO) -> DatasetCard:
    card_data = DatasetCardData(
        language="en", license="mit", pretty_name="Demo", tags=["synthetic"]
    )
    card = DatasetCard.from_template(
        card_data, template_str="---\n{{ card_data }}\n---\n" + CARD_BODY + "\n"
    )
    HfApi().create_repo(repo_id, repo_type="dataset", token=HUB_TOKEN)
    card.push_to_hub(repo_id, repo_type="dataset", token=HUB_TOKEN)
    return card


# ------------------------------------------------------------------------------------------
# datasets round trips
# ------------------------------------------------------------------------------------------


def test_private_push_then_load_round_trip(fake_hub: FakeHub) -> None:
    Dataset.from_dict(ROWS).push_to_hub(REPO, token=HUB_TOKEN, private=True, num_shards=2)

    assert fake_hub.repos[REPO].private is True
    assert fake_hub.repos[REPO].type == "dataset"
    files = fake_hub.files(REPO)
    shards = sorted(p for p in files if p.startswith("data/train-") and p.endswith(".parquet"))
    assert shards == ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]
    assert "README.md" in files
    head = fake_hub.commits(REPO)[-1]
    for shard in shards:  # went through the LFS batch + PUT + verify path
        assert shard in head.lfs_paths
        assert hashlib.sha256(files[shard]).hexdigest() in fake_hub.repos[REPO].lfs_objects
    assert len(head.sha) == 40

    loaded = load_dataset(REPO, token=HUB_TOKEN, split="train")
    assert loaded.to_dict() == ROWS

    # The token travels only as a bearer header, and never to the LFS storage URL.
    for method, path, headers in fake_hub.requests:
        assert HUB_TOKEN not in path
        if path.startswith("/__lfs/") and method == "PUT":
            assert "authorization" not in headers
        elif path.startswith("/api/datasets/"):
            assert headers["Authorization"] == f"Bearer {HUB_TOKEN}"


def test_private_repo_is_hidden_without_token(fake_hub: FakeHub) -> None:
    Dataset.from_dict(ROWS).push_to_hub(REPO, token=HUB_TOKEN, private=True)
    with pytest.raises(RepositoryNotFoundError):
        HfApi().repo_info(REPO, repo_type="dataset", token=False)
    with pytest.raises(DatasetNotFoundError):
        load_dataset(REPO, split="train", token=False)


def test_card_first_then_data_keeps_card_and_merges_splits(fake_hub: FakeHub) -> None:
    _push_card()

    Dataset.from_dict(ROWS).push_to_hub(REPO, token=HUB_TOKEN)
    readme = fake_hub.files(REPO)["README.md"]
    meta = _front_matter(readme)
    assert CARD_BODY in readme.decode()
    assert meta["license"] == "mit"
    assert meta["pretty_name"] == "Demo"
    assert meta["tags"] == ["synthetic"]
    assert "dataset_info" in meta
    assert "configs" in meta

    Dataset.from_dict(TEST_ROWS).push_to_hub(REPO, token=HUB_TOKEN, split="test")
    files = fake_hub.files(REPO)
    readme = files["README.md"]
    meta = _front_matter(readme)
    assert CARD_BODY in readme.decode()
    assert meta["language"] == "en"
    info = meta["dataset_info"]
    assert isinstance(info, dict)
    assert {s["name"] for s in info["splits"]} == {"train", "test"}
    assert "data/train-00000-of-00001.parquet" in files
    assert "data/test-00000-of-00001.parquet" in files

    assert load_dataset(REPO, token=HUB_TOKEN, split="train").to_dict() == ROWS
    assert load_dataset(REPO, token=HUB_TOKEN, split="test").to_dict() == TEST_ROWS
    # repo_info exposes the YAML as cardData, like the Hub.
    card_data = HfApi().dataset_info(REPO, token=HUB_TOKEN).card_data
    assert card_data is not None
    assert card_data.to_dict()["pretty_name"] == "Demo"


def test_card_load_and_stale_parent_commit(fake_hub: FakeHub) -> None:
    _push_card()
    loaded = DatasetCard.load(REPO, repo_type="dataset", token=HUB_TOKEN)
    assert loaded.data.to_dict()["license"] == "mit"
    assert CARD_BODY in loaded.text

    stale = HfApi().repo_info(REPO, repo_type="dataset", token=HUB_TOKEN).sha
    assert stale is not None
    Dataset.from_dict(ROWS).push_to_hub(REPO, token=HUB_TOKEN)
    head_before = fake_hub.commits(REPO)[-1].sha

    loaded.data.tags = ["synthetic", "updated"]
    with pytest.raises(HfHubHTTPError) as excinfo:
        loaded.push_to_hub(REPO, repo_type="dataset", token=HUB_TOKEN, parent_commit=stale)
    assert excinfo.value.response.status_code == 412
    assert fake_hub.commits(REPO)[-1].sha == head_before

    # The documented update recipe: reload, merge, push against the current head.
    fresh = DatasetCard.load(REPO, repo_type="dataset", token=HUB_TOKEN)
    fresh.data.tags = ["synthetic", "updated"]
    fresh.push_to_hub(REPO, repo_type="dataset", token=HUB_TOKEN, parent_commit=head_before)
    meta = _front_matter(fake_hub.files(REPO)["README.md"])
    assert meta["tags"] == ["synthetic", "updated"]
    assert "dataset_info" in meta


def test_push_without_token_fails_cleanly(fake_hub: FakeHub) -> None:
    with pytest.raises(HfHubHTTPError) as excinfo:
        Dataset.from_dict(ROWS).push_to_hub(REPO)
    assert excinfo.value.response.status_code == 401
    assert INVALID_CREDENTIALS in str(excinfo.value)
    assert fake_hub.repos == {}


def test_invalid_token_is_rejected(fake_hub: FakeHub) -> None:
    with pytest.raises(HfHubHTTPError) as excinfo:
        HfApi().create_repo(REPO, repo_type="dataset", token="not-a-token")
    assert excinfo.value.response.status_code == 401
    assert fake_hub.repos == {}
    assert HfApi().whoami(token=HUB_TOKEN)["name"] == "tester"


def test_create_pr_commits_on_a_pr_ref(fake_hub: FakeHub) -> None:
    HfApi().create_repo(REPO, repo_type="dataset", token=HUB_TOKEN)
    info = Dataset.from_dict(ROWS).push_to_hub(REPO, token=HUB_TOKEN, create_pr=True)

    assert info.pr_url is not None
    assert info.pr_url.endswith("/datasets/tester/demo/discussions/1")
    assert info.pr_revision == "refs/pr/1"
    assert set(fake_hub.files(REPO)) == {".gitattributes"}  # main untouched
    pr_files = fake_hub.files(REPO, "refs/pr/1")
    assert "README.md" in pr_files
    assert "data/train-00000-of-00001.parquet" in pr_files
    assert fake_hub.repos[REPO].pull_requests.keys() == {1}

    refs = HfApi().list_repo_refs(
        REPO, repo_type="dataset", include_pull_requests=True, token=HUB_TOKEN
    )
    assert refs.pull_requests is not None
    assert [r.ref for r in refs.pull_requests] == ["refs/pr/1"]
    loaded = load_dataset(REPO, revision="refs/pr/1", token=HUB_TOKEN, split="train")
    assert loaded.to_dict() == ROWS


# ------------------------------------------------------------------------------------------
# HfApi surface
# ------------------------------------------------------------------------------------------


def test_hfapi_create_upload_list_info(fake_hub: FakeHub) -> None:
    api = HfApi(token=HUB_TOKEN)
    url = api.create_repo(REPO, repo_type="dataset", private=True)
    assert url == f"{_endpoint()}/datasets/{REPO}"
    assert url.repo_id == REPO
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.create_repo(REPO, repo_type="dataset")
    assert excinfo.value.response.status_code == 409
    assert api.create_repo(REPO, repo_type="dataset", exist_ok=True).repo_id == REPO

    api.upload_file(
        path_or_fileobj=b'{"a": 1}\n',
        path_in_repo="raw/rows.jsonl",
        repo_id=REPO,
        repo_type="dataset",
        commit_message="Add rows",
    )
    big = os.urandom(1_100_000)
    api.upload_file(
        path_or_fileobj=io.BytesIO(big),
        path_in_repo="blobs/big.bin",
        repo_id=REPO,
        repo_type="dataset",
    )
    assert sorted(api.list_repo_files(REPO, repo_type="dataset")) == [
        ".gitattributes",
        "blobs/big.bin",
        "raw/rows.jsonl",
    ]
    info = api.repo_info(REPO, repo_type="dataset", files_metadata=True)
    assert info.private is True
    assert info.sha == fake_hub.commits(REPO)[-1].sha
    siblings = {s.rfilename: s for s in info.siblings or []}
    assert siblings["blobs/big.bin"].lfs is not None
    assert siblings["blobs/big.bin"].lfs.sha256 == hashlib.sha256(big).hexdigest()
    assert siblings["raw/rows.jsonl"].lfs is None

    tree = list(api.list_repo_tree(REPO, repo_type="dataset", expand=True))
    assert {(e.path, type(e).__name__) for e in tree} == {
        (".gitattributes", "RepoFile"),
        ("blobs", "RepoFolder"),
        ("raw", "RepoFolder"),
    }
    assert all(e.last_commit is not None for e in tree)
    paths = api.get_paths_info(REPO, ["raw/rows.jsonl", "missing"], repo_type="dataset")
    assert [p.path for p in paths] == ["raw/rows.jsonl"]

    commits = api.list_repo_commits(REPO, repo_type="dataset")
    assert [c.title for c in commits][:1] == ["Upload blobs/big.bin with huggingface_hub"]
    assert commits[-1].title == "initial commit"
    # An unchanged file is skipped client-side thanks to the preupload `oid`.
    again = api.upload_file(
        path_or_fileobj=b'{"a": 1}\n',
        path_in_repo="raw/rows.jsonl",
        repo_id=REPO,
        repo_type="dataset",
    )
    assert again.oid == commits[0].commit_id


def test_branches_downloads_and_revisions(fake_hub: FakeHub) -> None:
    api = HfApi(token=HUB_TOKEN)
    api.create_repo(REPO, repo_type="dataset")
    api.create_branch(REPO, branch="dev", repo_type="dataset")
    api.create_branch(REPO, branch="dev", repo_type="dataset", exist_ok=True)
    api.upload_file(
        path_or_fileobj=b"on dev",
        path_in_repo="notes.txt",
        repo_id=REPO,
        repo_type="dataset",
        revision="dev",
    )
    assert "notes.txt" not in fake_hub.files(REPO)
    assert fake_hub.files(REPO, "dev")["notes.txt"] == b"on dev"
    local = hf_hub_download(REPO, "notes.txt", repo_type="dataset", revision="dev")
    with open(local, "rb") as f:
        assert f.read() == b"on dev"
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "notes.txt", repo_type="dataset", revision="main")
    with pytest.raises(RevisionNotFoundError):
        api.repo_info(REPO, repo_type="dataset", revision="nope")

    # A PR opened with create_commit, then updated through its URL-encoded ref.
    pr = api.create_commit(
        REPO,
        [CommitOperationAdd("pr.txt", b"v1")],
        commit_message="Open PR",
        repo_type="dataset",
        create_pr=True,
    )
    assert pr.pr_num == 1
    api.upload_file(
        path_or_fileobj=b"v2",
        path_in_repo="pr.txt",
        repo_id=REPO,
        repo_type="dataset",
        revision="refs/pr/1",
    )
    assert fake_hub.files(REPO, "refs/pr/1")["pr.txt"] == b"v2"
    local = hf_hub_download(REPO, "pr.txt", repo_type="dataset", revision="refs/pr/1")
    with open(local, "rb") as f:
        assert f.read() == b"v2"
    assert any("/resolve/refs%2Fpr%2F1/" in path for _, path, _ in fake_hub.requests)


# ------------------------------------------------------------------------------------------
# HTTP details
# ------------------------------------------------------------------------------------------


def test_http_shapes_ranges_and_chunked_uploads(fake_hub: FakeHub) -> None:
    base = _endpoint()
    auth = {"Authorization": f"Bearer {HUB_TOKEN}"}
    missing = requests.get(f"{base}/api/datasets/{REPO}", timeout=5)
    assert missing.status_code == 404
    assert missing.headers["X-Error-Code"] == "RepoNotFound"
    assert "error" in missing.json()
    unauth = requests.post(f"{base}/api/repos/create", json={"name": "x"}, timeout=5)
    assert unauth.status_code == 401
    assert unauth.json() == {"error": INVALID_CREDENTIALS}

    payload = b"0123456789" * 1000
    fake_hub.add_repo(REPO, {"data/blob.parquet": payload, "small.txt": b"hello"})
    head = fake_hub.commits(REPO)[-1].sha
    url = f"{base}/datasets/{REPO}/resolve/main/data/blob.parquet"
    meta = requests.head(url, timeout=5)
    assert meta.status_code == 200
    assert meta.headers["X-Repo-Commit"] == head
    assert meta.headers["X-Linked-Size"] == str(len(payload))
    assert meta.headers["X-Linked-Etag"] == f'"{hashlib.sha256(payload).hexdigest()}"'
    assert meta.headers["Content-Length"] == str(len(payload))
    part = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=5)
    assert part.status_code == 206
    assert part.content == payload[10:20]
    past_end = requests.get(url, headers={"Range": f"bytes={len(payload)}-"}, timeout=5)
    assert past_end.status_code == 416
    gone = requests.head(f"{base}/datasets/{REPO}/resolve/main/nope.txt", timeout=5)
    assert gone.status_code == 404
    assert gone.headers["X-Error-Code"] == "EntryNotFound"

    # A chunked (streamed, no Content-Length) LFS upload, as the LFS PUT may be sent.
    data = os.urandom(300_000)
    oid = hashlib.sha256(data).hexdigest()
    batch = requests.post(
        f"{base}/datasets/{REPO}.git/info/lfs/objects/batch",
        json={"operation": "upload", "objects": [{"oid": oid, "size": len(data)}]},
        headers=auth,
        timeout=5,
    ).json()
    actions = batch["objects"][0]["actions"]

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(data), 65_536):
            yield data[i : i + 65_536]

    put = requests.put(actions["upload"]["href"], data=chunks(), timeout=5)
    assert put.status_code == 200
    assert "chunked" in fake_hub.requests[-1].headers.get("transfer-encoding", "")
    verify = requests.post(
        actions["verify"]["href"], json={"oid": oid, "size": len(data)}, headers=auth, timeout=5
    )
    assert verify.status_code == 200
    assert fake_hub.repos[REPO].lfs_objects[oid] == data

    # Concurrent readers.
    with ThreadPoolExecutor(max_workers=16) as pool:
        bodies = list(pool.map(lambda _: requests.get(url, timeout=5).content, range(32)))
    assert all(b == payload for b in bodies)

    validate = requests.post(
        f"{base}/api/validate-yaml",
        json={"content": "---\na: [\n---\n", "repoType": "dataset"},
        timeout=5,
    )
    assert validate.status_code == 400
    assert json.loads(validate.content)["errors"]


# ------------------------------------------------------------------------------------------
# The fixture itself
# ------------------------------------------------------------------------------------------


def test_a_request_to_an_unknown_route_fails_the_test_that_made_it(pytester: Any) -> None:
    """A catch-all 404 must not pass for an answer of the real Hub: the fixture fails the test
    at teardown, naming the route; a known route's 404 (a missing repo) fails nothing."""
    tests = Path(__file__).resolve().parent
    pytester.makeconftest(
        "import os, socket, sys\n"
        f"sys.path.insert(0, {str(tests)!r})\n"
        "with socket.socket() as s:\n"
        "    s.bind(('127.0.0.1', 0))\n"
        "    os.environ['HF_ENDPOINT'] = f'http://127.0.0.1:{s.getsockname()[1]}'\n"
        "from fakehub import fake_hub as fake_hub\n"
    )
    pytester.makepyfile(
        "import os, requests\n"
        "def test_unknown_route(fake_hub):\n"
        "    url = os.environ['HF_ENDPOINT'] + '/api/no-such-route?x=1'\n"
        "    assert requests.get(url, timeout=30).status_code == 404\n"
        "def test_known_route(fake_hub):\n"
        "    url = os.environ['HF_ENDPOINT'] + '/api/datasets/me/missing'\n"
        "    assert requests.get(url, timeout=30).status_code == 404\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        ["*ERROR at teardown of test_unknown_route*", "*no route for: GET /api/no-such-route?x=1*"]
    )
