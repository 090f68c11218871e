"""Photographs kept whole, as a job sees them: the input's metadata dropped (``--strip``)
or carried to each output that can hold it, and its colours decoded to linear light
(``--linear``) before the first layer. :func:`convvol.jobs.run_job` calls these for every
input, so a single file, a batch and a cluster behave alike.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from convvol.errors import ParameterError
from convvol.io.metadata import ImageInfo, ReadImage
from convvol.io.photo import for_output, is_srgb, profile_name, stripped
from convvol.io.readers import pixels_to_volume
from convvol.scaling import srgb_to_linear

if TYPE_CHECKING:
    from convvol.jobs import Item, JobOptions


def photo_input(read: ReadImage, item: Item, options: JobOptions) -> ReadImage:
    """The input as the banks see it: without its metadata under ``--strip``; under
    ``--linear``, its values decoded from sRGB to linear light (float32, divisor 1)."""
    info = stripped(read.info) if options.strip else read.info
    if not options.linear:
        return replace(read, info=info)
    if not is_srgb(info):
        assert info.icc_profile is not None
        raise ParameterError(
            f"{item.label}: --linear decodes sRGB, and this image's colour profile is "
            f"{profile_name(info.icc_profile)!r}",
            hint="convert the image to sRGB first (magick in.jpg -profile sRGB.icc out.jpg), "
            "or add --strip to treat its values as sRGB",
        )
    frames = tuple(srgb_to_linear(pixels_to_volume(frame, read.divisor)) for frame in read.frames)
    pixels = frames[0] if frames else srgb_to_linear(pixels_to_volume(read.pixels, read.divisor))
    return ReadImage(pixels, 1.0, info, frames)


def colour_outputs(options: JobOptions) -> bool:
    """Whether the outputs are the input's colours: every bank one depthwise filter (blur,
    sharpen), so output channel k is input channel k filtered. Other banks' outputs (edge
    responses, mixtures of channels) are measurements, not colours."""
    return all(len(bank.filters) == 1 and bank.filters[0].depthwise for bank in options.banks)


def output_info(info: ImageInfo, options: JobOptions, channels: int) -> ImageInfo:
    """What an output of ``channels`` channels carries (see :func:`convvol.io.photo.for_output`)."""
    return for_output(info, channels, colour=colour_outputs(options))


def linear_streamed_error(label: str) -> ParameterError:
    """--linear on the out-of-core path (.npy/Zarr strips), which does not convert."""
    return ParameterError(
        f"{label}: --linear converts images' colours in memory; a .npy or Zarr volume "
        "filtered strip by strip is not converted",
        hint="write an image output (e.g. -o out.png), or convert the volume to linear light "
        "first with convvol.srgb_to_linear",
    )
