"""Opening a VCF/BCF as htslib would read it, each failure one LocalInputError [2].

pysam cannot open a VCF compressed with plain gzip (it asks for the file offset, which plain
gzip cannot give), though htslib and bcftools read one from start to end. Such a file is fed
to htslib through a pipe, decompressed by Python's gzip in a thread, and read in one stream
(no index can exist for it); a warning says how to make it indexable.
"""

from __future__ import annotations

import errno
import gzip
import logging
import os
import shutil
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pysam

from genofed.errors import LocalInputError

log = logging.getLogger(__name__)


@dataclass
class Opened:
    """An open VCF/BCF and, for a plain-gzip file, the thread that feeds it."""

    vf: pysam.VariantFile
    feeder: threading.Thread | None = None
    failure: list[str] = field(default_factory=list)  # what stopped the feeder early

    @property
    def piped(self) -> bool:
        return self.feeder is not None

    def finish(self, path: Path) -> None:
        """Wait for the feeder; a plain-gzip file that could not be read to its end is an
        error, never a shorter file read silently."""
        if self.feeder is None:
            return
        self.feeder.join()
        if self.failure:
            raise LocalInputError(f"{path}: plain gzip stream is truncated or corrupt: "
                                  f"{self.failure[0]}")


def check_path(path: Path) -> None:
    if not path.exists():
        raise LocalInputError(f"{path}: VCF file not found")
    if path.is_dir():
        raise LocalInputError(f"{path}: is a directory, not a VCF/BCF file")
    if path.stat().st_size == 0:
        raise LocalInputError(f"{path}: file is empty, not a VCF/BCF")


def open_variants(path: Path) -> Opened:
    """Open a VCF/BCF; every failure is a LocalInputError."""
    try:
        opened = Opened(pysam.VariantFile(str(path)))
    except ValueError:
        problem = _gzip_problem(path)
        if problem:
            raise LocalInputError(f"{path}: truncated or corrupt gzip: {problem}") from None
        raise LocalInputError(f"{path}: not a VCF/BCF file") from None
    except NotImplementedError:  # plain gzip: htslib cannot tell offsets in it
        opened = _open_piped(path)
    except OSError as exc:
        if exc.errno == errno.ENOEXEC:  # htslib: unrecognised format
            raise LocalInputError(f"{path}: not a VCF/BCF file") from None
        raise LocalInputError(f"{path}: cannot open VCF/BCF (truncated or corrupt?): "
                              f"{exc.strerror or exc}") from None
    vf = opened.vf
    if not vf.is_vcf and not vf.is_bcf:
        vf.close()
        raise LocalInputError(f"{path}: not a VCF/BCF file (format {vf.format})")
    return opened


def warn_piped(path: Path) -> None:
    """After a plain-gzip file was read: how to make it indexable (a warning, not a refusal)."""
    log.warning("%s: compressed with plain gzip, not bgzip: read in one stream, without an "
                "index; for region access recompress it: zcat %s | bgzip > fixed.vcf.gz",
                path, path)


def _open_piped(path: Path) -> Opened:
    read_end, write_end = os.pipe()
    failure: list[str] = []
    feeder = threading.Thread(target=_feed, args=(path, write_end, failure), daemon=True,
                              name="gzip-feeder")
    feeder.start()
    try:
        vf = pysam.VariantFile(f"/dev/fd/{read_end}")
    except (ValueError, OSError):
        os.close(read_end)
        feeder.join()
        raise LocalInputError(f"{path}: not a VCF/BCF file (plain gzip)") from None
    os.close(read_end)  # htslib holds its own descriptor now
    return Opened(vf, feeder, failure)


def _feed(path: Path, fd: int, failure: list[str]) -> None:
    """Decompress `path` into the pipe; stops quietly when the reader goes away, and notes
    why when the file itself ends early or is corrupt."""
    try:
        with gzip.open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 16)
    except BrokenPipeError:
        pass
    except (OSError, EOFError, zlib.error) as exc:
        failure.append(str(exc) or type(exc).__name__)


def _gzip_problem(path: Path) -> str | None:
    """Why a gzip file cannot be decompressed to its end (None if it can, or is not gzip);
    read only on the way to an error."""
    try:
        with path.open("rb") as f:
            if f.read(2) != b"\x1f\x8b":
                return None
        with gzip.open(path, "rb") as f:
            while f.read(1 << 20):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        return str(exc) or type(exc).__name__
    return None


def first_record_has_gt(path: Path) -> bool:
    """True if the file's first record has a GT key (read on a handle of its own)."""
    try:
        with pysam.VariantFile(str(path)) as vf:
            rec = next(iter(vf), None)
            return rec is not None and "GT" in rec.format
    except NotImplementedError:  # plain gzip: look at the text
        try:
            with gzip.open(path, "rt") as f:
                for line in f:
                    if not line.startswith("#"):
                        fields = line.split("\t")
                        return len(fields) > 8 and "GT" in fields[8].split(":")
        except (OSError, EOFError, UnicodeDecodeError, zlib.error):
            return False
    except (OSError, ValueError, StopIteration):
        return False
    return False
