"""Decontamination against evaluation sets: contamination planted at known rows, every kind of
evaluation set (a Dataset, a file, a save_to_disk folder, a Hub id through the fake Hub)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasets import Dataset, DatasetDict
from fakehub import HUB_TOKEN, LFS_PUT_WARNING_FILTER
from helpers import write_jsonl

from synth_datasets import ConfigurationError, EvalSet, decontaminate, get_provenance
from synth_datasets.cli import main
from synth_datasets.prep import find_contamination, index_eval_sets
from synth_datasets.provenance import attach_provenance

pytestmark = pytest.mark.filterwarnings(LFS_PUT_WARNING_FILTER)

RNG = np.random.default_rng(15)


def words(k: int) -> list[str]:
    return [f"w{x}" for x in RNG.choice(10**9, size=k, replace=False)]


EVAL = [" ".join(words(30)) for _ in range(40)]  # 40 evaluation texts of 30 words


def planted() -> tuple[Dataset, dict[int, str]]:
    """200 rows of their own words, and what was planted where: rows 17 and 42 quote 14 and
    exactly 13 words of an evaluation text (17 in another case, with punctuation); row 99 only
    12; row 150 13 with the middle one changed; row 160 is an error row quoting a whole text."""
    rows = [{"answer": " ".join(words(40)), "error": None} for _ in range(200)]

    def quote(row: int, text: int, start: int, length: int, change: int | None = None) -> str:
        span = EVAL[text].split()[start : start + length]
        if change is not None:
            span[change] = "other"
        body = rows[row]["answer"].split()
        rows[row]["answer"] = " ".join([*body[:10], *span, *body[10:]])
        return " ".join(span)

    quote(17, 3, 5, 14)
    rows[17]["answer"] = rows[17]["answer"].upper().replace(" ", ",  ", 3)
    quote(42, 9, 17, 13)
    quote(99, 1, 0, 12)
    quote(150, 5, 2, 13, change=6)
    rows[160] = {"answer": EVAL[7], "error": "parse: not JSON"}
    ds = Dataset.from_list(rows)
    attach_provenance(ds, {"generated_columns": ["answer"], "multiplier": 4})
    return ds, {17: "14 words", 42: "13 words"}


def eval_set() -> Dataset:
    return Dataset.from_dict({"question": EVAL, "label": ["a"] * len(EVAL)})


def test_planted_rows_are_found_and_nothing_else():
    ds, expected = planted()
    found = find_contamination(ds, [eval_set()])
    assert found.flagged.tolist() == sorted(expected)
    assert found.record()["sets"][0] | {"fingerprint": None} == {
        "name": "a Dataset in memory",
        "revision": None,
        "fingerprint": None,
        "config": None,
        "split": None,
        "columns": ["question", "label"],
        "texts": 40,
        "texts_too_short": 0,
        "ngrams": 40 * 19,  # 30 words and the label: 19 13-grams each, all distinct
        "rows_flagged": 2,
    }
    # 12 words are enough at n=12: row 99 as well.
    assert find_contamination(ds, [eval_set()], n=12).flagged.tolist() == [17, 42, 99]
    assert find_contamination(ds, [eval_set()], n=15).flagged.tolist() == []


def test_decontaminate_removes_on_request_and_records_it():
    ds, expected = planted()
    counted = decontaminate(ds, [eval_set()])
    assert len(counted) == len(ds) and get_provenance(ds) == {
        "generated_columns": ["answer"],
        "multiplier": 4,
    }  # the input is left as it was
    record = get_provenance(counted)["decontamination"]
    assert (record["n"], record["rows_flagged"], record["rows_removed"]) == (13, 2, 0)
    removed = decontaminate(ds, [eval_set()], remove=True)
    assert len(removed) == 198
    assert get_provenance(removed)["decontamination"]["rows_removed"] == 2
    assert get_provenance(removed)["multiplier"] == 4  # the generation record is kept
    kept = {row["answer"] for row in removed}
    assert all(ds[i]["answer"] not in kept for i in expected)
    assert find_contamination(removed, [eval_set()]).rows_flagged == 0


def test_every_kind_of_evaluation_set(tmp_path, fake_hub):
    ds, _ = planted()
    # A file holding text 3 only; a save_to_disk folder whose test split holds text 9; the Hub
    # holding both texts in `question` and an unrelated `answer` column.
    path = write_jsonl(tmp_path / "evals.jsonl", [{"q": EVAL[3]}])
    folder = tmp_path / "evals"
    DatasetDict(
        {"train": Dataset.from_dict({"q": [EVAL[3]]}), "test": Dataset.from_dict({"q": [EVAL[9]]})}
    ).save_to_disk(str(folder))
    hub = Dataset.from_dict({"question": [EVAL[3], EVAL[9]], "answer": ["x y", "z"]})
    hub.push_to_hub("me/evals", split="validation", token=HUB_TOKEN)
    head = fake_hub.commits("me/evals")[-1].sha
    found = find_contamination(
        ds,
        [
            str(path),
            f"{folder}:test",
            EvalSet("me/evals", split="validation", columns=["question"]),
        ],
    )
    assert found.flagged.tolist() == [17, 42]
    sets = found.record()["sets"]
    assert [(s["name"], s["split"], s["columns"], s["rows_flagged"]) for s in sets] == [
        ("evals.jsonl", None, ["q"], 1),  # a local set by its name, not its place here
        ("evals", "test", ["q"], 1),
        ("me/evals", "validation", ["question"], 2),
    ]
    assert sets[2]["revision"] == head and sets[2]["fingerprint"] is None
    assert sets[0]["fingerprint"] and sets[0]["revision"] is None
    # The Hub set by a command-line spec: its split named, its revision pinned.
    spec = EvalSet.parse(f"me/evals@{head}:validation")
    assert (spec.source, spec.revision, spec.split) == ("me/evals", head, "validation")
    assert find_contamination(ds, [spec]).rows_flagged == 2


def test_eval_set_specs_and_bad_input(tmp_path):
    assert EvalSet.parse("openai/gsm8k:main:test") == EvalSet(
        "openai/gsm8k", split="test", config="main"
    )
    assert EvalSet.parse("me/evals@v1") == EvalSet("me/evals", revision="v1")
    path = write_jsonl(tmp_path / "e.jsonl", [{"q": "a b c"}])
    assert EvalSet.parse(str(path)) == EvalSet(str(path))
    assert EvalSet.parse(f"{path}:train") == EvalSet(str(path), split="train")
    for spec in ("a:b:c:d", "me/x@:test", "me/x::test"):
        with pytest.raises(ConfigurationError, match="an evaluation set is PATH"):
            EvalSet.parse(spec)
    ds, _ = planted()
    with pytest.raises(ConfigurationError, match="no such file or folder"):
        find_contamination(ds, [str(tmp_path / "missing.jsonl")])
    with pytest.raises(ConfigurationError, match="a list of one or more"):
        find_contamination(ds, str(path))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"no column\(s\) \['text'\]"):
        find_contamination(ds, [EvalSet(eval_set(), columns=["text"])])
    with pytest.raises(ConfigurationError, match="no column holds text"):
        find_contamination(ds, [Dataset.from_dict({"n": [1, 2]})])
    with pytest.raises(ConfigurationError, match="columns to compare"):
        find_contamination(ds, [eval_set()], columns=["nope"])
    with pytest.raises(ConfigurationError, match="n must be"):
        find_contamination(ds, [eval_set()], n=0)


def test_report_command_counts_against_evaluation_sets(tmp_path, capsys):
    ds, _ = planted()
    ds.save_to_disk(str(tmp_path / "data"))
    evals = write_jsonl(tmp_path / "evals.jsonl", [{"q": t} for t in EVAL])
    assert main(["report", str(tmp_path / "data"), "--against", str(evals)]) == 0
    out = capsys.readouterr().out
    assert "## Decontamination" in out and "were counted" in out
    assert "| `evals.jsonl` |" in out and "rows flagged (an n-gram of any set): 2;" in out
    args = ["report", str(tmp_path / "data"), "--json", "--against", str(evals), "--ngram", "12"]
    assert main(args) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["contamination"]["flagged_rows"] == [17, 42, 99]
    assert figures["contamination"]["rows_removed"] is None
    assert figures["rows"] == 200  # the quality report is all there too
    for words in ("0", "65"):
        with pytest.raises(SystemExit) as exit_code:  # argparse refuses it, naming the flag
            main(["report", str(tmp_path / "data"), "--against", str(evals), "--ngram", words])
        assert exit_code.value.code == 2
        assert f"--ngram: a whole number from 1 to 64, got '{words}'" in capsys.readouterr().err


def test_a_split_is_chosen_as_the_command_line_names_it_and_never_ignored(tmp_path, capsys):
    ds, _ = planted()
    path = write_jsonl(tmp_path / "good.jsonl", [{"q": EVAL[3]}])
    with pytest.raises(
        ConfigurationError, match=r"good.jsonl is one file, with no splits.*drop :validation"
    ):
        find_contamination(ds, [f"{path}:validation"])
    folder = tmp_path / "evals"
    DatasetDict(
        {"train": Dataset.from_dict({"q": [EVAL[3]]}), "dev": Dataset.from_dict({"q": [EVAL[9]]})}
    ).save_to_disk(str(folder))
    ds.save_to_disk(str(tmp_path / "data"))
    assert main(["report", str(tmp_path / "data"), "--no-near", "--against", str(folder)]) == 2
    err = capsys.readouterr().err
    assert (
        f"{folder} has no split 'test' (read when none is named), only train, dev: choose one as {folder}:SPLIT"
        in err
    )
    found = find_contamination(ds, [f"{folder}:dev"])
    assert (found.record()["sets"][0]["split"], found.flagged.tolist()) == ("dev", [42])


def test_one_column_name_is_one_column_and_n_is_bounded_up_front():
    ds, _ = planted()
    assert EvalSet(eval_set(), columns="question").columns == ("question",)
    found = find_contamination(ds, [EvalSet(eval_set(), columns="question")])
    assert found.record()["sets"][0]["columns"] == ["question"]
    for n in (0, 65, 2.5, True):
        with pytest.raises(
            ConfigurationError, match="n must be a whole number of words from 1 to 64"
        ) as info:
            find_contamination(ds, [eval_set()], n=n)  # type: ignore[arg-type]
        assert info.value.option == "n"


def test_evaluation_sets_indexed_once_before_the_rows():
    ds, _ = planted()
    index = index_eval_sets([eval_set()], n=12)
    assert index.n == 12 and index.sets[0]["texts"] == 40
    assert find_contamination(ds, index).flagged.tolist() == [17, 42, 99]
    assert len(decontaminate(ds, index, remove=True)) == 197
    with pytest.raises(ConfigurationError, match="indexed with n=12"):
        find_contamination(ds, index, n=13)


def test_japanese_and_chinese_rows_are_checked_character_by_character():
    """In scripts written without spaces each character is a word (``dedup._words``): a row that
    quotes 13 characters of a Japanese evaluation text is flagged, 12 are not enough, Chinese rows
    on the same subjects (sharing 富士山, 一九五八年) are not, and a 13-word English quote glued to
    Chinese characters on both sides is found."""
    ja = [
        "富士山の山頂で日の出を見るためには、夜のうちに八合目の山小屋を出発しなければならない。",
        "東京タワーは一九五八年に完成した高さ三百三十三メートルの電波塔で、今も多くの観光客が訪れる。",
    ]
    evals = Dataset.from_dict({"question": [*ja, *EVAL[:3]]})
    english = " ".join(EVAL[2].split()[3:16])
    rows = Dataset.from_dict(
        {
            "answer": [
                "たぶん夜のうちに八合目の山小屋を出るのがいい。",  # 13 characters of ja[0]
                "たぶん夜のうちに八合目の山小屋で休むのがいい。",  # 12
                "富士山是日本最高的山，每年夏天都有很多人在夜里出发，去山顶看日出。",
                "东京塔建成于一九五八年，高三百三十三米，现在仍然吸引很多游客。",
                f"根据说明{english}然后重启",
            ]
        }
    )
    found = find_contamination(rows, [evals])
    assert found.flagged.tolist() == [0, 4]
    assert found.record()["sets"][0]["texts_too_short"] == 0  # 41 and 44 characters
    kept = decontaminate(rows, [evals], remove=True)
    assert kept["answer"] == [rows[i]["answer"] for i in (1, 2, 3)]
    assert find_contamination(rows, [evals], n=12).flagged.tolist() == [0, 1, 4]
