"""The ``emoji`` dataset: real images + text + a 9-class label, fetched from npm.

``ensure`` fetches ``emoji-datasource-twitter@16.0.0`` (Twitter 64×64 PNGs, ``emoji.json``) and
``openmoji@17.0.0`` (``data/openmoji.json``) with ``npm pack`` into a cache folder outside git,
joins them on the code point (see :mod:`.build`) and writes into the dataset folder:

- ``emoji_ids.txt``: the ``unified`` code point sequence of each emoji (e.g. ``1F600``);
- ``images.npy``: ``n × 3 × 64 × 64`` uint8 RGB, the RGBA PNG composited on white (the
  ``images`` reader would turn transparent pixels black, so the array is written here);
- ``text.txt``: one line per emoji (OpenMoji annotation and tags, emoji-datasource name and
  short names);
- ``category.npy`` (int64 class index) + ``categories.txt`` (the 9 names, index order);
- ``added_in.npy``: float32 Unicode/Emoji version that introduced it ("13.0" → 13.0);
- ``manifest.json``, written last: packages, counts per file, joined, dropped by reason, classes.

About 1,906 emoji in 9 classes (1,911 in ``emoji.json`` less 5 skin-tone ``Component`` s).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmfuse import hookimpl

if TYPE_CHECKING:
    from mmfuse.plugins import Register


@hookimpl
def mmfuse_register_datasets(register: Register) -> None:
    # an import path: the dataset's module is imported when it is first used
    register.add("emoji", "mmfuse_emoji.dataset:EMOJI")
