"""New-topic discovery on synthetic embeddings with known topics."""

from __future__ import annotations

import numpy as np

from tasks.topics import find_topics, keywords, novel_mask

WORDS = {
    0: "refund invoice charge billing",
    1: "password login reset account",
    2: "parcel delivery courier shipping",
    3: "aurora hub firmware pairing",
}


def sample(rng, counts, dim=32, noise=0.25):
    centres = np.eye(dim)[: len(WORDS)]
    vectors, texts = [], []
    for topic, n in counts.items():
        v = centres[topic] + noise * rng.normal(size=(n, dim)) / np.sqrt(dim)
        vectors.append(v)
        texts += [
            f"{WORDS[topic]} question {i} my email is a{i}@example.com"
            for i in range(n)
        ]
    vectors = np.vstack(vectors)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), texts


def test_a_new_topic_at_ten_percent_is_reported_with_keywords_and_scrubbed_examples():
    rng = np.random.default_rng(0)
    ref, ref_texts = sample(rng, {0: 300, 1: 300, 2: 300})
    cur, cur_texts = sample(rng, {0: 270, 1: 270, 2: 270, 3: 90})
    found = find_topics(ref, cur, ref_texts, cur_texts)
    (topic,) = found["emerging"]
    assert 80 <= topic["size"] <= 95
    assert abs(topic["share"] - 0.1) < 0.02
    assert {"aurora", "hub", "firmware", "pairing"} & set(topic["keywords"][:3])
    assert "example" not in topic["keywords"]
    assert 3 <= len(topic["examples"]) <= 5
    assert all("@example.com" not in e and "<EMAIL>" in e for e in topic["examples"])
    assert found["vanished"] == []


def test_a_topic_that_disappears_is_reported_as_vanished():
    rng = np.random.default_rng(1)
    ref, ref_texts = sample(rng, {0: 300, 1: 300, 2: 300})
    cur, cur_texts = sample(rng, {0: 450, 1: 450})
    found = find_topics(ref, cur, ref_texts, cur_texts)
    assert found["emerging"] == []
    (gone,) = found["vanished"]
    assert "parcel" in gone["keywords"] or "delivery" in gone["keywords"]


def test_two_samples_of_the_same_traffic_report_no_topics():
    rng = np.random.default_rng(2)
    ref, ref_texts = sample(rng, {0: 300, 1: 300, 2: 300})
    cur, cur_texts = sample(rng, {0: 300, 1: 300, 2: 300})
    assert find_topics(ref, cur, ref_texts, cur_texts) == {
        "emerging": [],
        "vanished": [],
    }


def test_about_one_percent_of_same_distribution_points_look_novel():
    rng = np.random.default_rng(3)
    ref, _ = sample(rng, {0: 1000})
    cur, _ = sample(rng, {0: 1000})
    assert novel_mask(ref, cur).mean() < 0.03


def test_keywords_survive_groups_made_only_of_stop_words():
    assert keywords(["the and of", "is it"], [[0], [1]]) == [[], []]
