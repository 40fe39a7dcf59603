"""The duplicate search: near-duplicate recall and false positives on pairs of known similarity.

The similarity of each pair is measured here by brute force (Python sets of word triples), not by
the code under test. Seeds are fixed: the pairs, hence the outcome, are the same on every run.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from datasets import Dataset
from helpers import load_script

from synth_datasets.dedup import DuplicateFinder, lsh_bands
from synth_datasets.prep import drop_duplicates, duplicate_mask
from synth_datasets.report import quality_report


def shingles(text: str) -> set[tuple[str, ...]]:
    words = text.split()
    return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}


def true_jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def known_pairs(levels: list[float], per_level: int, seed: int) -> list[tuple[str, str, float]]:
    """The benchmark's pairs near each Jaccard level (``scripts/bench.py``: a text of 40-160
    distinct words, and the same text with words appended or replaced 3+ apart; no word shared
    between pairs), with their similarity measured here."""
    pairs = load_script("bench.py").recall_pairs(tuple(levels), per_level, seed)
    return [(a, b, true_jaccard(a, b)) for _, a, b in pairs]


@pytest.mark.parametrize("threshold", [0.7, 0.85, 0.95])
def test_near_duplicate_recall_and_false_positives_at_known_jaccard(threshold):
    levels = [min(threshold + d, 0.99) for d in (-0.2, -0.1, -0.06, -0.03, 0, 0.02, 0.03, 0.05)]
    pairs = known_pairs(levels, per_level=150, seed=int(threshold * 100))
    ds = Dataset.from_dict({"text": [t for a, b, _ in pairs for t in (a, b)]})
    truth = np.array([j for _, _, j in pairs])
    flagged = duplicate_mask(ds, near=True, threshold=threshold)
    assert not flagged[0::2].any()  # the first text of a pair repeats nothing
    found = flagged[1::2]
    above, below = truth >= threshold + 0.02, truth <= threshold - 0.05
    assert above.sum() >= 150 and below.sum() >= 150  # enough pairs on each side to judge
    assert found[above].mean() >= 0.99
    assert found[below].mean() <= 0.01
    # The report counts the same rows, and drop_duplicates drops them.
    assert quality_report(ds, near_threshold=threshold).near_duplicates == found.sum()
    assert len(drop_duplicates(ds, near=True, threshold=threshold)) == len(ds) - found.sum()


def test_the_issue_pairs_are_found():
    """Issue 15's measurements: a two-row dataset of a pair at Jaccard 0.95 reported 0 near
    duplicates, and 40-word pairs with one middle word changed (Jaccard 35/41 = 0.854) were
    counted 39 % of the time."""
    a = " ".join(f"w{i}" for i in range(100))
    b = a + " five more words right here"  # 98 shingles, 5 more in b: 98 / 103 = 0.951
    assert true_jaccard(a, b) == pytest.approx(98 / 103)
    assert quality_report(Dataset.from_dict({"text": [a, b]})).near_duplicates == 1
    rng = np.random.default_rng(2)
    texts = []
    for _ in range(400):
        words = [f"w{x}" for x in rng.choice(10**9, size=40, replace=False)]
        texts.append(" ".join(words))
        words[20] = "changed"
        texts.append(" ".join(words))
        assert true_jaccard(texts[-2], texts[-1]) == pytest.approx(35 / 41)
    ds = Dataset.from_dict({"text": texts})
    assert quality_report(ds).near_duplicates == 400
    assert len(drop_duplicates(ds, near=True)) == 400


def test_bands_miss_a_pair_at_the_threshold_at_most_once_in_a_thousand():
    for threshold in (0.3, 0.5, 0.7, 0.85, 0.9, 0.95, 0.99, 1.0):
        bands, rows = lsh_bands(threshold)
        assert bands * rows <= 64
        assert (1 - threshold**rows) ** bands <= 1e-3


def test_finder_matches_every_indexed_set_and_skips_on_request():
    """What the seed-group split builds on: every indexed row similar to a query, not only one."""
    finder = DuplicateFinder(threshold=0.85)
    base = " ".join(f"w{i}" for i in range(60))
    texts = pa.array([base, base + " x1", base + " x2", "something else entirely here"])
    sets = finder.shingle_sets(texts)
    for s in sets:
        finder.add(s, finder.band_keys(s))
    query = sets[0]
    assert list(finder.matches(query, finder.band_keys(query))) == [0, 1, 2]
    assert list(finder.matches(query, finder.band_keys(query), skip=lambda k: k == 1)) == [0, 2]
    assert not finder.similar(sets[0], sets[3]) and finder.similar(sets[1], sets[2])


# Scripts written without spaces: each character is a word (dedup._words). A text of 41 Chinese
# characters and the same text with one changed (三十 -> 四十): 39 character triples, 3 replaced,
# so a Jaccard similarity of 36 / 42 = 0.857.
ZH = "请先关闭路由器的电源，等待大约三十秒后再重新打开，然后检查正面的所有指示灯是否变成绿色。"


def near_flags(texts: list[str]) -> list[bool]:
    """The rows ``drop_duplicates(near=True)`` drops, checked against the report's count."""
    ds = Dataset.from_dict({"text": texts})
    flagged = duplicate_mask(ds, near=True).tolist()
    assert quality_report(ds).near_duplicates == sum(flagged)
    assert len(drop_duplicates(ds, near=True)) == len(texts) - sum(flagged)
    return flagged


def test_a_chinese_answer_with_one_character_changed_is_a_near_duplicate():
    changed = ZH.replace("三十", "四十")
    # Another answer about the same router, sharing words (路由器, 然后) but not its sentences.
    other = "请先打开路由器的设置页面，输入管理员密码后选择无线网络，然后修改网络名称并保存设置。"
    assert near_flags([ZH, other, changed]) == [False, False, True]
    # Six characters of the last clause rewritten (Jaccard 0.78): not near.
    assert near_flags([ZH, ZH.replace("是否变成绿色", "是否还在闪烁红灯")]) == [False, False]


def test_a_thai_answer_with_one_word_changed_is_a_near_duplicate():
    """Thai puts spaces between phrases, not words: two phrases of 90 characters in all (a letter
    with its vowel and tone marks is one), of which สามสิบ -> หกสิบ replaces 3 by 2."""
    thai = (
        "กรุณาปิดเราเตอร์แล้วรอประมาณสามสิบวินาทีก่อนเปิดใหม่อีกครั้ง "
        "จากนั้นตรวจดูว่าไฟด้านหน้าทุกดวงเปลี่ยนเป็นสีเขียวหรือไม่"
    )
    other = "กรุณาเปิดหน้าตั้งค่าของเราเตอร์แล้วใส่รหัสผ่านผู้ดูแลระบบเพื่อเปลี่ยนชื่อเครือข่ายไร้สาย"
    changed = thai.replace("สามสิบ", "หกสิบ")  # thirty -> sixty seconds
    assert near_flags([thai, other, changed]) == [False, False, True]


def test_zero_width_spaces_between_thai_words_are_no_words():
    """Thai writers mark word breaks with U+200B: the text has the same shingles with or without
    them, and is near (and n-gram) equal to its plain form."""
    thai = "กรุณาปิดเราเตอร์แล้วรอประมาณสามสิบวินาทีก่อนเปิดใหม่อีกครั้ง"
    marked = "\u200b".join(["กรุณา", "ปิด", "เราเตอร์", "แล้ว", "รอ", "ประมาณ", "สามสิบ", "วินาที"])
    marked += "\u200bก่อน\u200bเปิด\u200bใหม่\u200bอีก\u200bครั้ง"
    assert marked.replace("\u200b", "") == thai
    a, b = DuplicateFinder.shingle_sets(pa.array([thai, marked]))
    assert a is not None and b is not None and a.tolist() == b.tolist()
    assert near_flags([thai, marked]) == [False, True]


def test_latin_words_inside_chinese_and_japanese_text_stay_words():
    """Latin words glued to CJK characters are words of their own: spaced apart or not, the text
    has the same words; one character changed out of 41 (or 36 in Japanese) is near."""
    zh = (
        "在Python 3.11中，用asyncio.run()启动事件循环，再用await等待每个任务完成，"
        "最后关闭所有的网络连接并记录运行日志。"
    )
    spaced = zh.replace("Python", " Python").replace("中", " 中").replace("await", " await ")
    ja = "Pythonのasyncio.runでイベントループを起動し、awaitで各タスクの完了を待ってから接続を閉じる。"
    a, b = DuplicateFinder.shingle_sets(pa.array([zh, spaced]))
    assert a is not None and b is not None and a.tolist() == b.tolist()
    texts = [zh, ja, spaced, zh.replace("记录", "记下"), ja.replace("閉じる", "閉める")]
    assert near_flags([*texts, "python asyncio await"]) == [False, False, True, True, True, False]
