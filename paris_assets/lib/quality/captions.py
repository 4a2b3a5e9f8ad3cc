"""Caption filters of filtered_images: language, length and boilerplate, judged on the source text (alt text).

They need no pixels, so filtering.pre_decode_rejections applies them before any decode: a rejected caption costs
no decode. Each returns a reason per row ('' to go on) and a detail, counted like the image checks:

- caption_boilerplate: the caption matches one of the patterns (case-insensitive `re.search`, so anchor a
  pattern with ^...$ to match whole captions only); detail: the first pattern, in settings order, that matched.
- caption_too_short: fewer words than the minimum; detail: "words N < M". A word is a whitespace-separated
  token holding at least one letter or digit, so "-", "|" and "..." are not words. Scripts written without
  spaces (Japanese, Chinese, Thai) count a whole phrase as one word: keep the minimum low for them.
- caption_language: the detected language is not among those kept, or the detector's confidence is below the
  minimum (language unknown); detail: the detected code and its score.

Language detection is py3langid (its model ships inside the wheel: offline), with normalised probabilities.
LanguageDetector reproduces py3langid's `classify` over many captions at once: the byte DFA walks all captions
of a batch in lockstep and the naive-Bayes scores are one sparse matrix product, about 6x the library's rate per
CPU-second (docs/caption-filters.md has the measurement); test_caption_filters checks it agrees with `classify`.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import pandas as pd

# A whitespace-separated token with at least one letter or digit ([^\W_]: a word character but not "_").
WORD = re.compile(r"(?<!\S)(?=\S*[^\W_])\S+")
BATCH = 16_384  # captions per lockstep DFA walk: the padded byte matrix stays a few MB


class LanguageDetector:
    """py3langid's classifier (norm_probs=True) over batches of captions. Cheap to build; `load()` reads the
    model once (~0.7 s; ~100 MB as int32 transitions and float32 scores); `__call__(texts)` returns (codes (N,)
    object array of ISO 639 codes, scores (N,) float32 in [0, 1]), as `classify` per text up to float rounding."""

    def __init__(self) -> None:
        self.labels: list[str] = []
        self._loaded = False

    def load(self) -> "LanguageDetector":
        if self._loaded:
            return self
        import py3langid
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        if not hasattr(LanguageIdentifier, "from_model_file"):  # 0.3: a pickled model, no length temperature
            raise RuntimeError(f"filter.caption_languages needs py3langid >= 0.4 (its length-calibrated scores), "
                               f"found {py3langid.__version__}: pip install -U 'py3langid>=0.4'")
        model = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        self.labels = model.labels
        self._classes = np.asarray(model.nb_classes, dtype=object)
        self._aliases = list(model._alias_pairs)  # (first, dupe) columns of one label (sr, uz: two scripts)
        self._next = np.frombuffer(model.tk_nextmove, dtype=np.dtype(model.tk_nextmove.typecode)).astype(np.int32)
        self._row = np.frombuffer(model.tk_row, dtype=np.dtype(model.tk_row.typecode)).astype(np.int32) << 8
        self._feature = np.asarray(model.tk_output, dtype=np.int32)
        self._ptc = np.asarray(model.nb_ptc, dtype=np.float32)
        self._pc = np.asarray(model.nb_pc, dtype=np.float32)
        self._loaded = True
        return self

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        if not self._loaded:
            raise RuntimeError("LanguageDetector: call load() before detecting languages")
        codes, scores = np.empty(len(texts), dtype=object), np.empty(len(texts), dtype=np.float32)
        for start in range(0, len(texts), BATCH):
            best, conf = self._batch(_encode(texts[start:start + BATCH]))
            codes[start:start + BATCH], scores[start:start + BATCH] = self._classes[best], conf
        return codes, scores

    def _batch(self, encoded: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        import scipy.sparse

        n = len(encoded)
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable")  # longest first: the captions still walking are a prefix
        ordered = lengths[order]
        width = int(ordered[0]) if n else 0
        padded = np.zeros((width, n), dtype=np.uint8)  # byte t of every caption is one contiguous row
        flat = np.frombuffer(b"".join([encoded[i] for i in order]), dtype=np.uint8)
        starts = np.repeat(np.cumsum(ordered) - ordered, ordered)
        padded[np.arange(len(flat)) - starts, np.repeat(np.arange(n), ordered)] = flat
        walking = np.searchsorted(-ordered, -np.arange(width), side="right")  # captions longer than t bytes
        state = np.zeros(n, dtype=np.int32)
        rows, features = [], []
        for t in range(width):
            k = walking[t]
            state[:k] = self._next[self._row[state[:k]] + padded[t, :k]]
            fired = self._feature[state[:k]]
            hit = np.flatnonzero(fired >= 0)
            rows.append(hit)
            features.append(fired[hit])
        rows = np.concatenate(rows + [np.empty(0, np.int64)])
        features = np.concatenate(features + [np.empty(0, np.int32)])
        visits = scipy.sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, features)),
                                         shape=(n, len(self._ptc)))  # repeats are summed: counts per feature
        visits.data = np.log1p(visits.data)
        scores = np.asarray(visits @ self._ptc, dtype=np.float32) + self._pc
        scores[np.diff(visits.indptr) == 0] = 0.0  # no feature at all: uniform, as py3langid abstains
        scores *= (1.0 / np.sqrt(np.maximum(ordered, 1))).astype(np.float32)[:, None]  # its length temperature
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
        for first, dupe in self._aliases:
            scores[:, first] += scores[:, dupe]
            scores[:, dupe] = 0.0
        best = scores.argmax(axis=1)
        conf = scores[np.arange(n), best]
        back = np.empty(n, dtype=np.int64)
        back[order] = np.arange(n)
        return best[back], conf[back]


def _encode(texts: Sequence[str]) -> list[bytes]:
    """py3langid's own preparation: all-capitals text lower-cased, NFC, UTF-8."""
    text = pd.Series(list(texts), dtype=object)
    text = text.where(~text.str.isupper().fillna(False).astype(bool), text.str.lower()).str.normalize("NFC")
    return [t.encode("utf-8", "surrogatepass") for t in text]


_DETECTOR: LanguageDetector | None = None


def language_detector() -> LanguageDetector:
    """This process's detector, loaded on first use (never when caption_languages is empty)."""
    global _DETECTOR
    if _DETECTOR is None:
        _DETECTOR = LanguageDetector().load()
    return _DETECTOR


def count_words(captions: pd.Series) -> pd.Series:
    """Words per caption: whitespace-separated tokens holding at least one letter or digit."""
    return captions.fillna("").astype(str).str.count(WORD.pattern).astype(np.int64)


def match_boilerplate(captions: pd.Series, patterns: Sequence[str]) -> pd.Series:
    """The first of `patterns` (case-insensitive, searched anywhere) that each caption matches; '' for none."""
    matched = pd.Series("", index=captions.index, dtype=object)
    text = captions.fillna("").astype(str)
    for pattern in patterns:
        search = re.compile(pattern, re.IGNORECASE).search
        open_ = text[matched == ""]
        hit = [search(t) is not None for t in open_]
        matched[open_.index[hit]] = pattern
    return matched


def caption_rejections(captions: pd.Series, languages: Sequence[str] = (), min_language_score: float = 0.5,
                       min_words: int = 0, boilerplate: Sequence[str] = ()) -> tuple[pd.Series, pd.Series]:
    """(reason, detail) per caption, '' to go on: caption_boilerplate, then caption_too_short, then
    caption_language, each judging only what the ones before kept (the detector sees the fewest captions).
    With every filter off nothing is read and no detector is loaded."""
    reason = pd.Series("", index=captions.index, dtype=object)
    detail = pd.Series("", index=captions.index, dtype=object)
    if boilerplate:
        pattern = match_boilerplate(captions, boilerplate)
        hit = pattern != ""
        reason[hit], detail[hit] = "caption_boilerplate", pattern[hit]
    if min_words > 0:
        open_ = reason == ""
        words = count_words(captions[open_])
        short = words[words < min_words]
        reason[short.index] = "caption_too_short"
        detail[short.index] = "words " + short.astype(str) + f" < {min_words}"
    if languages:
        detector = language_detector()
        unknown = sorted(set(languages) - set(detector.labels))
        if unknown:
            raise ValueError(f"filter.caption_languages: {unknown} are not languages py3langid detects; it knows "
                             f"{', '.join(sorted(detector.labels))}")
        open_ = captions[reason == ""].fillna("").astype(str)
        # many alt texts repeat ("image", product names): each distinct caption is detected once
        codes_of, distinct = pd.factorize(open_)
        found, scores = detector(list(distinct))
        code, score = found[codes_of], scores[codes_of]
        unsure = score < min_language_score
        dropped = unsure | ~np.isin(code, list(languages))
        kept = ", ".join(languages)
        reason[open_.index[dropped]] = "caption_language"
        detail[open_.index[dropped]] = [f"{c} (score {s:.3f} < {min_language_score})" if u else
                                        f"{c} (score {s:.3f}), kept: {kept}"
                                        for c, s, u in zip(code[dropped], score[dropped], unsure[dropped])]
    return reason, detail


def check_patterns(patterns: tuple[str, ...]) -> tuple[str, ...]:
    """Settings validation of filter.caption_boilerplate: every entry must compile as a regular expression."""
    for pattern in patterns:
        try:
            re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a regular expression ({exc}); escape literal characters such "
                             r"as ( [ + ? with a backslash, e.g. 'Stock Photo \(\d+\)'") from None
    return patterns


def check_languages(codes: tuple[str, ...]) -> tuple[str, ...]:
    """Settings validation of filter.caption_languages: ISO 639-1 codes (two letters), lower-cased."""
    lowered = tuple(str(code).strip().lower() for code in codes)
    bad = [code for code, low in zip(codes, lowered) if not re.fullmatch("[a-z]{2}", low)]
    if bad:
        raise ValueError(f"{bad} are not ISO 639-1 codes: use two letters, e.g. [en, de, ja]")
    return lowered
