"""Synthetic Goodreads-shaped sample with planted multimodal structure.

Every book ``i`` has a latent vector ``u_i ~ N(0, I_8)``.  The factors are
rendered into the two modalities as follows:

====  ======================================  ==============================
u     cover (``covers.npy``)                  text (``descriptions.txt``)
====  ======================================  ==============================
u0    red-vs-blue hue of the background       --
u1    signed contrast of diagonal stripes     --
u2    --                                      bit 0 of the topic-word codes
u3    --                                      bit 1
u4    overall brightness                      bit 2
u5    size of the central pale disk           --
u6    --                                      bit 3
u7    --                                      bit 4
====  ======================================  ==============================

Descriptions are sentence templates with slots for generic adjectives, nouns,
verbs and names and for topic words.  Every topic word has a fixed 5-bit code
(three words per code; bit 0 separates fiction-flavoured from
non-fiction-flavoured words).  A topic slot draws each bit ``j``
independently as 1 with probability ``sigmoid(TOPIC_GAIN * u_{TEXT_FACTORS[j]})``
(this is a log-linear topic model), so every topic word carries a little
evidence about all five text factors; a fraction ``NEUTRAL_PROB`` of the slots
get an uninformative theme word instead.

* ``is_fiction`` thresholds (at the exact quantile giving the requested count)
  a score built from cover factors (u0, u1), text factors (u2, u3), the shared
  factor u4 and Gaussian noise.
* ``average_rating`` is ``3.9 + 0.3 * z`` where ``z`` is a standardised
  combination of u5 (cover), u6, u7 (text) and noise, rounded to two decimals
  and clipped to [1, 5].

So each modality alone recovers only part of either target and a joint
representation is needed to do well.  Nuisance makes nothing trivially
separable: pixel noise, random per-cover green tint and exposure, random
"title" and "author" blocks, random disk jitter, generic filler words, varied
sentence templates and description lengths of 20-120 words.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

LATENT_DIM = 8
PAPER_N_BOOKS, PAPER_N_FICTION = 5000, 3188
TOPIC_GAIN = 1.6
TEXT_FACTORS = (2, 3, 4, 6, 7)  # latent factor behind each bit of a topic word's code
# The topic word for code p (bit j = (p >> j) & 1) and variant c (0-2) is
# TOPIC_FLAVOURS[p & 1][3 * (p >> 1) + c]; bit 0 picks the fiction/non-fiction flavour.
FICTION_FLAVOUR = """dragon kingdom sword quest wizard prophecy throne sorcery realm knight magic
    detective murder secret betrayal mystery suspect alibi crime killer conspiracy love heart
    romance wedding passion desire kiss longing affair vampire zombie monster ghost curse demon
    nightmare spaceship android robot colony planet princess pirate treasure heist spy assassin"""
NONFICTION_FLAVOUR = """economy market policy investment strategy leadership productivity finance
    management growth history research evidence century science discovery biography archive data
    analysis war battle soldier army empire invasion siege technology algorithm machine climate
    health nutrition habit career parenting memoir faith prayer church spirituality philosophy
    psychology neuroscience evolution medicine politics democracy"""
TOPIC_FLAVOURS = (tuple(NONFICTION_FLAVOUR.split()), tuple(FICTION_FLAVOUR.split()))
NEUTRAL_THEMES = ["life", "time", "world", "people", "journey", "change", "truth", "power", "loss", "choice"]
ADJECTIVES = ["remarkable", "gripping", "quiet", "bold", "tender", "sweeping", "haunting", "sharp", "vivid", "fierce", "strange", "brilliant", "dark", "warm", "surprising"]
NOUNS = ["price", "meaning", "nature", "cost", "shape", "edge", "end", "promise", "weight", "story", "lesson", "secret", "road", "line", "future"]
VERBS = ["changes", "collapses", "begins", "unravels", "shifts", "ends", "breaks", "returns"]
NAMES = ["Anna", "Marcus", "Eleanor", "Jonah", "Clara", "Samuel", "Ruth", "Elias", "Maya", "Victor", "Nora", "Felix"]
TEMPLATES = (
    "A {A} story of {T} and {T}.",
    "When {P} discovers the {T}, everything {V}.",
    "This {A} book explores {T}, {T} and the {N} of {T}.",
    "{P} must face the {T} before the {T} {V}.",
    "Set against a backdrop of {T}, it is a {A} tale about {T}.",
    "The author writes about {T} and {T} with {A} clarity.",
    "Readers will find {T} on every page.",
    "At its heart lies a question of {T} and {N}.",
    "From {T} to {T}, nothing is what it seems.",
    "It is {A}, {A} and full of {T}.",
    "{P} had always believed in the {T} of {T}.",
    "Few books capture the {T}, the {T} and the {T} so well.",
)
NEUTRAL_PROB = 0.1  # probability that a topic slot gets a neutral theme word
COVER_CHUNK = 250


def _describe(rng: np.random.Generator, bit_prob: np.ndarray, n_words: int) -> str:
    """One description of at least ``n_words`` words (templates hold <= 12 words)."""
    bit_weights = 1 << np.arange(len(TEXT_FACTORS))
    sentences: list[str] = []
    count = 0
    while count < n_words:
        template = TEMPLATES[rng.integers(len(TEMPLATES))]
        n_topic = template.count("{T}")
        codes = (rng.random((n_topic, len(TEXT_FACTORS))) < bit_prob) @ bit_weights
        neutral = rng.random(n_topic) < NEUTRAL_PROB
        picks = rng.integers(1 << 30, size=n_topic + 5)
        sentence = template
        for code, is_neutral, pick in zip(codes, neutral, picks, strict=False):
            if is_neutral:
                word = NEUTRAL_THEMES[pick % len(NEUTRAL_THEMES)]
            else:
                word = TOPIC_FLAVOURS[code & 1][3 * (code >> 1) + pick % 3]
            sentence = sentence.replace("{T}", word, 1)
        sentence = (sentence.replace("{A}", ADJECTIVES[picks[-5] % len(ADJECTIVES)], 1)
                    .replace("{A}", ADJECTIVES[picks[-4] % len(ADJECTIVES)])
                    .replace("{N}", NOUNS[picks[-3] % len(NOUNS)])
                    .replace("{V}", VERBS[picks[-2] % len(VERBS)])
                    .replace("{P}", NAMES[picks[-1] % len(NAMES)]))
        sentences.append(sentence)
        count += len(sentence.split())
    return " ".join(sentences)


def _render_covers(rng: np.random.Generator, latent: np.ndarray, out: np.ndarray) -> None:
    """Paint channels-first uint8 covers into ``out`` (n x 3 x S x S), chunk by chunk."""
    size = out.shape[-1]
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    stripes = np.sin(2 * np.pi * 5 * (xx + yy))
    for start in range(0, len(latent), COVER_CHUNK):
        u = latent[start:start + COVER_CHUNK].astype(np.float32)
        m = len(u)
        hue, contrast, light, disk = u[:, 0], u[:, 1], u[:, 4], u[:, 5]
        green = rng.uniform(60, 180, m).astype(np.float32)
        exposure = rng.normal(0.0, 8.0, (m, 1)).astype(np.float32)
        base = np.stack([120 + 40 * hue, green, 120 - 40 * hue], axis=1) + 28 * light[:, None]
        base += exposure
        img = base[:, :, None, None] + (22 * contrast)[:, None, None, None] * stripes
        center = 0.5 + rng.uniform(-0.08, 0.08, (m, 2)).astype(np.float32)
        radius = 0.2 + 0.06 * np.tanh(disk / 1.5)
        in_disk = ((xx - center[:, 0, None, None]) ** 2
                   + (yy - center[:, 1, None, None]) ** 2) < radius[:, None, None] ** 2
        img = np.where(in_disk[:, None], np.float32(225), img)
        for height in (0.18, 0.07):  # title block, then author block
            top = rng.uniform(0.0, 1.0 - height, m)[:, None, None]
            left = rng.uniform(0.0, 0.3, m)[:, None, None]
            width = rng.uniform(0.4, 0.7, m)[:, None, None]
            color = rng.uniform(0, 255, (m, 3, 1, 1)).astype(np.float32)
            block = (yy >= top) & (yy < top + height) & (xx >= left) & (xx < left + width)
            img = np.where(block[:, None], color, img)
        img += rng.normal(0.0, 30.0, img.shape).astype(np.float32)
        out[start:start + m] = np.clip(img, 0, 255).astype(np.uint8)


def make_sample(root: Path, n_books: int = 5000, seed: int = 0, image_size: int = 64,
                n_fiction: int | None = None) -> dict:
    """Write a deterministic synthetic Goodreads-like sample into ``root``.

    Files (aligned with ``book_ids.txt``): ``book_ids.txt``, ``covers.npy``
    (uint8, n x 3 x S x S), ``descriptions.txt`` (UTF-8, one per line),
    ``is_fiction.npy`` (int64), ``average_rating.npy`` (float32) and
    ``manifest.json``, whose content is also returned.
    """
    if n_fiction is None:
        n_fiction = round(n_books * PAPER_N_FICTION / PAPER_N_BOOKS)
    if n_books < 1 or not 0 <= n_fiction <= n_books:
        raise ValueError(f"need n_books >= 1 and 0 <= n_fiction <= n_books, "
                         f"got {n_books=}, {n_fiction=}")
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    book_ids = rng.choice(99_900_000, size=n_books, replace=False) + 100_000
    latent = rng.standard_normal((n_books, LATENT_DIM))

    fiction_score = (0.8 * latent[:, 0] + 0.8 * latent[:, 1] + 0.8 * latent[:, 2]
                     + 0.8 * latent[:, 3] + 0.6 * latent[:, 4]
                     + 0.45 * rng.standard_normal(n_books))
    is_fiction = np.zeros(n_books, dtype=np.int64)
    is_fiction[np.argsort(-fiction_score, kind="stable")[:n_fiction]] = 1

    rating_weights = np.array([0.6, 0.5, 0.5])
    rating_noise_sd = 0.4
    rating_score = (latent[:, [5, 6, 7]] @ rating_weights
                    + rating_noise_sd * rng.standard_normal(n_books))
    rating_score /= np.sqrt(rating_weights @ rating_weights + rating_noise_sd ** 2)
    average_rating = np.clip(np.round(3.9 + 0.3 * rating_score, 2), 1.0, 5.0).astype(np.float32)

    covers = np.lib.format.open_memmap(root / "covers.npy", mode="w+", dtype=np.uint8,
                                       shape=(n_books, 3, image_size, image_size))
    _render_covers(rng, latent, covers)
    covers.flush()
    del covers

    bit_prob = 1.0 / (1.0 + np.exp(-TOPIC_GAIN * latent[:, list(TEXT_FACTORS)]))
    lengths = rng.integers(20, 109, size=n_books)
    with open(root / "descriptions.txt", "w", encoding="utf-8", newline="\n") as handle:
        for i in range(n_books):
            handle.write(_describe(rng, bit_prob[i], int(lengths[i])) + "\n")

    (root / "book_ids.txt").write_text("".join(f"{b}\n" for b in book_ids), encoding="utf-8")
    np.save(root / "is_fiction.npy", is_fiction)
    np.save(root / "average_rating.npy", average_rating)

    summary = {
        "source": "synthetic",
        "seed": seed,
        "n_books": n_books,
        "n_fiction": int(n_fiction),
        "n_nonfiction": int(n_books - n_fiction),
        "image_size": image_size,
        "latent_dim": LATENT_DIM,
        "rating_mean": round(float(average_rating.mean()), 4),
        "rating_std": round(float(average_rating.std()), 4),
        "files": ["book_ids.txt", "covers.npy", "descriptions.txt",
                  "is_fiction.npy", "average_rating.npy"],
    }
    (root / "manifest.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n",
                                        encoding="utf-8")
    logger.info("wrote synthetic sample of %d books (%d fiction) to %s",
                n_books, n_fiction, root)
    return summary
