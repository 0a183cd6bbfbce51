import random
import string

import numpy as np
import pytest

from kernel.similarity import (
    NUM_PERM,
    band_keys,
    estimated_jaccard,
    exact_hash,
    jaccard,
    lsh_params,
    normalise,
    shingles,
    signatures,
)


def test_normalise_folds_case_unicode_and_whitespace():
    assert normalise("  TESCO\tStores\n 3341 ") == "tesco stores 3341"
    assert normalise("Ｃａｆé") == normalise("café")  # NFKC: full-width letters
    assert normalise("STRASSE") == normalise("straße")  # casefold, not lower()


def test_exact_hash_is_stable_and_discriminates():
    # pinned: the stored exact-dupe keys of every existing warehouse depend on this value
    assert exact_hash("abc") == 8696274497037089104
    assert exact_hash("abc") != exact_hash("abd")


def test_shingles_of_short_text_is_the_text():
    assert shingles("abc", 5) == {"abc"}
    assert shingles("abcdef", 5) == {"abcde", "bcdef"}


def test_jaccard_exact():
    assert jaccard("abcdef", "abcdef", 5) == 1.0
    assert jaccard("abcdef", "abcdeg", 5) == pytest.approx(1 / 3)


def test_signatures_shape_dtype_and_determinism():
    s1 = signatures(["hello world", "a", ""], 5)
    s2 = signatures(["hello world", "a", ""], 5)
    assert s1.shape == (3, NUM_PERM) and s1.dtype == np.uint32
    assert (s1 == s2).all()
    # batch and single computation agree
    assert (signatures(["hello world"], 5)[0] == s1[0]).all()


def test_long_input_is_chunked_without_changing_the_result():
    text = "".join(random.Random(3).choice(string.ascii_lowercase) for _ in range(20000))
    a = signatures([text], 5, chunk_shingles=1 << 15)
    b = signatures([text, "x"], 5, chunk_shingles=1000)
    assert (a[0] == b[0]).all()


def test_minhash_estimates_jaccard_without_bias():
    rng = random.Random(11)
    errors = []
    for _ in range(400):
        t = "".join(rng.choice(string.ascii_lowercase + " ") for _ in range(100))
        u = list(t)
        for _ in range(rng.randint(0, 12)):
            u[rng.randrange(len(u))] = rng.choice(string.ascii_lowercase)
        u = "".join(u)
        sig = signatures([t, u], 5)
        errors.append(estimated_jaccard(sig[0], sig[1]) - jaccard(t, u, 5))
    assert abs(np.mean(errors)) < 0.01
    assert np.std(errors) < 0.07  # binomial sd at J~0.5 with 64 permutations is ~0.0625


def test_lsh_params_fit_the_permutations():
    for t in (0.5, 0.8, 0.9):
        b, r = lsh_params(t)
        assert b * r <= NUM_PERM
    # higher thresholds use longer bands
    assert lsh_params(0.9)[1] > lsh_params(0.5)[1]


def test_band_keys_equal_for_equal_bands_only():
    sig = signatures(["the same text here", "the same text here", "something else entirely"], 5)
    keys = band_keys(sig, 6, 10)
    assert (keys[0] == keys[1]).all()
    assert not (keys[0] == keys[2]).any()
