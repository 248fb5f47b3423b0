"""What the XD-Violence repository on the Hub looks like, and the labels its old loading script made.

Used by :mod:`vfx_tasks.sources.hub_dataset` only. Layout of ``jherng/xd-violence``: videos under
``data/video/<range>/<name>.mp4`` (train ranges ``1-1004``, ``1005-2004``... and ``test_videos``),
frame-level annotations of the test videos in ``data/test_annotations.txt``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)

XD_VIOLENCE = "jherng/xd-violence"
XD_CONFIG = "video"
XD_VIDEO_PREFIX = "data/video/"
XD_TEST_RANGE = "test_videos"
XD_TEST_ANNOTATIONS = "data/test_annotations.txt"
#: Label codes in XD-Violence file names (``..._label_B2-G-0``) and their class indices.
XD_CODE_TO_INDEX: Mapping[str, int] = {"A": 0, "B1": 1, "B2": 2, "B4": 3, "B5": 4, "B6": 5, "G": 6}
_ANNOTATION_LINE = re.compile(r"^(?P<name>.+?)(?P<frames>(?:\s+\d+)*)$")


def xd_violence_labels(video_id: str) -> dict[str, Any]:
    """``binary_target`` and ``multilabel_targets`` from an XD-Violence file stem (``..._label_B1-B2-0``)."""
    codes = video_id.rsplit("_", 1)[-1].split("-")
    return {
        "binary_target": int(len(codes) > 1),
        "multilabel_targets": [XD_CODE_TO_INDEX[code] for code in codes if code in XD_CODE_TO_INDEX],
        "label_codes": [code for code in codes if code != "0"],
    }


def parse_frame_annotations(text: str) -> dict[str, list[dict[str, int]]]:
    """``{video_id: [{"start", "end"}, ...]}`` from lines ``<name>[.mp4] start end [start end ...]``.

    The frame numbers are read from the end of the line, so names holding spaces survive.
    """
    found: dict[str, list[dict[str, int]]] = {}
    for line in text.splitlines():
        match = _ANNOTATION_LINE.match(line.strip())
        if match is None:
            continue
        name = match["name"].strip()
        name = name[:-4] if name.endswith(".mp4") else name
        numbers = [int(number) for number in match["frames"].split()]
        if len(numbers) % 2:
            logger.warning("Ignoring annotation line %r: frame numbers come in start/end pairs", line)
            continue
        found[name] = [{"start": s, "end": e} for s, e in zip(numbers[::2], numbers[1::2], strict=True)]
    return found
