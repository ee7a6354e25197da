"""Batch extraction of photos into one features HDF5 file (resumable)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from .conf import ExtractorConf
from .featio import FeatureWriter
from .image import ImageError, list_images, problem_of


@dataclass
class ExtractReport:
    out: str
    extracted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already in the file
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, problem)
    seconds: float = 0.0

    def summary(self, with_failures: bool = True) -> str:
        lines = [
            f"{self.out}: {len(self.extracted)} extracted, {len(self.skipped)} already there, "
            f"{len(self.failed)} failed ({self.seconds:.1f} s)"
        ]
        if self.failed and with_failures:
            lines.append("photos that could not be used:")
            lines += [f"  {path}: {problem}" for path, problem in self.failed]
        return "\n".join(lines)


def extract_to_h5(
    inputs,
    out: str,
    conf: ExtractorConf | None = None,
    float16: bool = False,
    progress: bool = True,
    extractor=None,
    compute=None,
    desc: str = "extract",
) -> ExtractReport:
    """Extract every photo of ``inputs`` (files, folders, .txt lists) into ``out``.

    Photos already in ``out`` are skipped, so an interrupted run resumes. Bad
    photos are reported at the end and never stop the batch. ``compute(path,
    name) -> Features`` replaces ``extractor.extract(path)`` (e.g. features
    rebuilt from cached feature maps); ``extractor`` still names the conf."""
    from tqdm import tqdm

    from .extractor import make_extractor

    items = list_images(inputs)
    if not items:
        raise ValueError(f"no photos found in {', '.join(map(str, inputs))}")
    extractor = extractor or make_extractor(conf)
    report = ExtractReport(out=os.fspath(out))
    t0 = time.perf_counter()
    with FeatureWriter(out, extractor.resolved_conf(), float16=float16) as writer:
        todo = []
        for path, name in items:
            if name in writer:
                report.skipped.append(name)
            else:
                todo.append((path, name))
        compute = compute or (lambda path, name: extractor.extract(path))
        bar = tqdm(todo, desc=desc, unit="photo", disable=None if progress else True, dynamic_ncols=True)
        for path, name in bar:
            try:
                feats = compute(path, name)
            except (ImageError, FileNotFoundError) as exc:
                report.failed.append((path, problem_of(exc, path)))
                continue
            writer.write(name, feats)
            report.extracted.append(name)
        if not report.extracted and not report.skipped and not os.path.exists(out):
            writer.discard()  # only bad photos: no empty features file
    report.seconds = time.perf_counter() - t0
    return report
