"""NLE export bundles (§3.8): a zip with a project file for the editor and the clip's media.

Premiere gets an FCP7 XML (``.xml``), DaVinci Resolve an FCPXML 1.9 (``.fcpxml``), Final Cut
Pro an FCPXML 1.10 (``.fcpxml``) and After Effects an ExtendScript (``.jsx``). Every project
file points at ``media/<name>.mp4`` relative to itself, so the unpacked folder opens as it is.
Building a bundle blocks (it reads the media): run :func:`build_bundle` in a thread.
"""

from __future__ import annotations

import json
import re
import stat
import unicodedata
import zipfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import av
import av.error

__all__ = [
    "EVIL_LINK",
    "EVIL_MEMBERS",
    "FORMATS",
    "MediaFacts",
    "build_bundle",
    "media_facts",
    "project_file",
    "slug",
]

FORMATS = ("premiere", "davinci", "fcpx", "after_effects")
_EXTENSIONS = {"premiere": ".xml", "davinci": ".fcpxml", "fcpx": ".fcpxml", "after_effects": ".jsx"}
# Members of a zip-slip bundle (``Faults.evil_bundles``): each tries to land outside the folder
# it is unpacked into. The link is added apart (it needs Unix mode bits).
EVIL_MEMBERS = (
    "../escape.txt",
    "/abs.txt",
    "..\\win-escape.txt",
    "C:/drive.txt",
    "media/../../up.txt",
)
EVIL_LINK = ("media/link.mp4", "../../../../../../etc/passwd")


@dataclass(frozen=True)
class MediaFacts:
    """What a project file needs to know about the media."""

    width: int = 1080
    height: int = 1920
    fps: int = 30
    duration: float = 1.0
    has_audio: bool = True

    @property
    def frames(self) -> int:
        """The duration in whole frames (at least one)."""
        return max(1, round(self.duration * self.fps))


def slug(title: str, fallback: str = "clip") -> str:
    """A short ASCII file name stem for ``title``."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    s = re.sub(r"[^A-Za-z0-9]+", "-", ascii_title).strip("-").lower()[:60].strip("-")
    return s or fallback


def media_facts(path: Path, fallback_duration: float) -> MediaFacts:
    """Picture size, frame rate, duration and audio presence of a video file."""
    try:
        with av.open(str(path), "r") as c:
            v = c.streams.video[0]
            rate = v.average_rate or v.guessed_rate or Fraction(30)
            duration = c.duration / av.time_base if c.duration else fallback_duration
            return MediaFacts(
                width=v.codec_context.width or 1080,
                height=v.codec_context.height or 1920,
                fps=max(1, round(float(rate))),
                duration=max(0.04, float(duration)),
                has_audio=bool(c.streams.audio),
            )
    except (av.error.FFmpegError, OSError, IndexError):
        return MediaFacts(duration=max(0.04, fallback_duration))


def _fcp7_xml(title: str, media_name: str, m: MediaFacts) -> str:
    rate = f"<rate><timebase>{m.fps}</timebase><ntsc>FALSE</ntsc></rate>"
    size = f"<width>{m.width}</width><height>{m.height}</height>"
    n, t = m.frames, escape(title)
    file_el = (
        f'<file id="file-1"><name>{escape(media_name)}</name>'
        f"<pathurl>media/{escape(media_name)}</pathurl>{rate}<duration>{n}</duration>"
        f"<media><video><samplecharacteristics>{size}</samplecharacteristics></video>"
        f"{'<audio><channelcount>2</channelcount></audio>' if m.has_audio else ''}</media></file>"
    )
    span = f"<duration>{n}</duration>{rate}<start>0</start><end>{n}</end><in>0</in><out>{n}</out>"
    video = (
        f"<video><format><samplecharacteristics>{size}{rate}</samplecharacteristics></format>"
        f'<track><clipitem id="clipitem-1"><name>{t}</name>{span}{file_el}</clipitem></track>'
        "</video>"
    )
    audio = ""
    if m.has_audio:
        audio = (
            f'<audio><track><clipitem id="clipitem-2"><name>{t}</name>{span}<file id="file-1"/>'
            "<sourcetrack><mediatype>audio</mediatype><trackindex>1</trackindex></sourcetrack>"
            "</clipitem></track></audio>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE xmeml>\n<xmeml version="4">'
        f'<sequence id="sequence-1"><name>{t}</name><duration>{n}</duration>{rate}'
        f"<media>{video}{audio}</media></sequence></xmeml>\n"
    )


def _fcpxml(title: str, media_name: str, m: MediaFacts, version: str) -> str:
    dur = f"{m.frames}/{m.fps}s"
    audio = ' hasAudio="1" audioSources="1" audioChannels="2"' if m.has_audio else ""
    t = quoteattr(title)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE fcpxml>\n'
        f'<fcpxml version="{version}"><resources>'
        f'<format id="r1" frameDuration="1/{m.fps}s" width="{m.width}" height="{m.height}"/>'
        f'<asset id="r2" name={t} start="0s" duration="{dur}" hasVideo="1" format="r1"{audio}>'
        f'<media-rep kind="original-media" src={quoteattr("./media/" + media_name)}/></asset>'
        f'</resources><library><event name="Carmic"><project name={t}>'
        f'<sequence format="r1" duration="{dur}" tcStart="0s" tcFormat="NDF"><spine>'
        f'<asset-clip ref="r2" name={t} offset="0s" start="0s" duration="{dur}"/>'
        "</spine></sequence></project></event></library></fcpxml>\n"
    )


def _jsx(title: str, media_name: str, m: MediaFacts) -> str:
    return (
        "// Carmic export for After Effects: File > Scripts > Run Script File...\n"
        "(function () {\n"
        "    var here = new File($.fileName).parent;\n"
        f"    var media = new File(here.fsName + {json.dumps('/media/' + media_name)});\n"
        "    app.beginUndoGroup('Carmic import');\n"
        "    var footage = app.project.importFile(new ImportOptions(media));\n"
        f"    var comp = app.project.items.addComp({json.dumps(title)}, {m.width}, {m.height}, "
        f"1, {m.duration:.3f}, {m.fps});\n"
        "    comp.layers.add(footage);\n"
        "    comp.openInViewer();\n"
        "    app.endUndoGroup();\n"
        "})();\n"
    )


def project_file(fmt: str, title: str, media_name: str, facts: MediaFacts) -> tuple[str, str]:
    """(file name suffix, text) of the project file for ``fmt``."""
    if fmt == "premiere":
        text = _fcp7_xml(title, media_name, facts)
    elif fmt == "davinci":
        text = _fcpxml(title, media_name, facts, "1.9")
    elif fmt == "fcpx":
        text = _fcpxml(title, media_name, facts, "1.10")
    elif fmt == "after_effects":
        text = _jsx(title, media_name, facts)
    else:
        raise ValueError(f"unknown export format {fmt!r}")
    return _EXTENSIONS[fmt], text


def build_bundle(
    dst: Path,
    fmt: str,
    title: str,
    media_path: Path,
    *,
    duration: float,
    proxy_path: Path | None = None,
    evil: bool = False,
) -> None:
    """Write the zip for ``fmt`` to ``dst``: ``<name><ext>`` and ``media/<name>.mp4``
    (plus ``media/<name>_proxy.mp4`` when a proxy is given, and the members of
    :data:`EVIL_MEMBERS` and a symbolic link when ``evil``). Blocking."""
    name = slug(title)
    media_name = f"{name}.mp4"
    suffix, text = project_file(fmt, title, media_name, media_facts(media_path, duration))
    with zipfile.ZipFile(dst, "w") as z:
        z.writestr(f"{name}{suffix}", text, compress_type=zipfile.ZIP_DEFLATED)
        z.write(media_path, f"media/{media_name}", compress_type=zipfile.ZIP_STORED)
        if proxy_path is not None:
            z.write(proxy_path, f"media/{name}_proxy.mp4", compress_type=zipfile.ZIP_STORED)
        if evil:
            for member in EVIL_MEMBERS:
                z.writestr(member, f"written outside the bundle by {member}\n")
            link = zipfile.ZipInfo(EVIL_LINK[0])
            link.create_system = 3  # Unix: the mode bits below are read
            link.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(link, EVIL_LINK[1])
