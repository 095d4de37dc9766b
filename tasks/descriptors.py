"""Quality descriptors of each response, computed through Evidently's descriptor API.

Evidently provides length, word count and phrase matching; it has no offline language
identification, repetition, truncation or PII-echo descriptor, so those four are ours,
registered as Evidently custom descriptors so they appear in its reports alike.
"""

from __future__ import annotations

import re
from functools import cache

import numpy as np
import pandas as pd

REFUSAL_PHRASES = [
    "i'm sorry, i can't",
    "i am sorry, i can't",
    "i'm sorry, but i can't",
    "i can't help with that",
    "i cannot help with that",
    "i'm unable to",
    "i am unable to",
    "i can't assist",
    "i cannot assist",
    "as an ai",
    "i'm not able to help",
]
# Columns the tabular drift report compares; text itself never enters the report.
DESCRIPTORS = [
    "response_length",
    "response_words",
    "refusal",
    "empty",
    "truncated",
    "length_ratio",
    "repetition",
    "language_mismatch",
    "pii_echo",
]
_TERMINAL = re.compile(r"""[.!?)\]"'”’…:;*`>\d]\s*$|^\s*$""")
_WORD = re.compile(r"\w+", re.UNICODE)


def describe(frame: pd.DataFrame) -> pd.DataFrame:
    """Return one row of descriptors per interaction (prompt and response columns)."""
    from evidently import DataDefinition, Dataset
    from evidently.descriptors import Contains, CustomDescriptor, TextLength, WordCount

    from tasks.pii import scrub

    # Evidently's columns come back indexed 0..n-1; align the input to match.
    frame = frame.reset_index(drop=True)
    # Evidently only ever sees scrubbed text, so nothing it keeps can hold PII.
    texts = pd.DataFrame(
        {
            "prompt": frame["prompt"].fillna("").map(scrub),
            "response": frame["response"].fillna("").map(scrub),
        }
    )
    raw_responses = frame["response"].fillna("").tolist()
    dataset = Dataset.from_pandas(
        texts,
        data_definition=DataDefinition(text_columns=["prompt", "response"]),
        descriptors=[
            TextLength("response", alias="response_length"),
            WordCount("response", alias="response_words"),
            Contains(
                "response",
                items=REFUSAL_PHRASES,
                case_sensitive=False,
                mode="any",
                alias="refusal",
            ),
            CustomDescriptor(_own_descriptors, alias="own"),
        ],
    )
    out = dataset.as_dataframe().drop(columns=["prompt", "response"])
    out.columns = [c.split(".", 1)[-1] for c in out.columns]
    out["pii_echo"] = [_has_pii(text) for text in raw_responses]
    out["truncated"] = out["truncated"] | _finish_reason_length(frame)
    for column in ("refusal", "empty", "truncated", "language_mismatch", "pii_echo"):
        out[column] = out[column].astype(bool)
    return out[DESCRIPTORS].reset_index(drop=True)


def _own_descriptors(dataset):
    """Empty, truncated, length ratio, repetition and language mismatch, per row."""
    from evidently.core.datasets import DatasetColumn

    prompts = dataset.column("prompt").data.fillna("").tolist()
    responses = dataset.column("response").data.fillna("").tolist()
    empty = [not r.strip() for r in responses]
    truncated = [bool(r.strip()) and not _TERMINAL.search(r) for r in responses]
    ratio = [len(r) / max(len(p), 1) for p, r in zip(prompts, responses, strict=True)]
    repetition = [_repetition(r) for r in responses]
    mismatch = [
        _language_mismatch(p, r) for p, r in zip(prompts, responses, strict=True)
    ]
    return {
        "empty": DatasetColumn("cat", pd.Series(empty)),
        "truncated": DatasetColumn("cat", pd.Series(truncated)),
        "length_ratio": DatasetColumn("num", pd.Series(ratio, dtype=float)),
        "repetition": DatasetColumn("num", pd.Series(repetition, dtype=float)),
        "language_mismatch": DatasetColumn("cat", pd.Series(mismatch)),
    }


def _repetition(text: str) -> float:
    """Share of word trigrams that repeat an earlier one: loops score near 1."""
    words = _WORD.findall(text.lower())
    grams = list(zip(words, words[1:], words[2:], strict=False))
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


@cache
def _identifier():
    import py3langid

    return py3langid


def _language(text: str) -> str | None:
    # Under four words a language guess is noise; do not flag it.
    if len(_WORD.findall(text)) < 4:
        return None
    return _identifier().classify(text)[0]


def _language_mismatch(prompt: str, response: str) -> bool:
    asked, answered = _language(prompt), _language(response)
    return asked is not None and answered is not None and asked != answered


def _has_pii(text: str) -> bool:
    from tasks.pii import find_pii

    return bool(find_pii(text))


def _finish_reason_length(frame: pd.DataFrame) -> np.ndarray:
    """Whether the serving stack itself said the answer hit its token limit."""
    if "metadata" not in frame:
        return np.zeros(len(frame), dtype=bool)
    meta = frame["metadata"].fillna("")
    return meta.str.contains('"finish_reason":"length"', regex=False).to_numpy()


def descriptor_shares(descriptors: pd.DataFrame) -> dict[str, float]:
    """Window-level figures: the share of flagged responses and the mean of the rest."""
    out = {}
    for column in DESCRIPTORS:
        values = descriptors[column]
        name = f"{column}_share" if values.dtype == bool else f"{column}_mean"
        out[name] = float(values.mean()) if len(values) else float("nan")
    return out
