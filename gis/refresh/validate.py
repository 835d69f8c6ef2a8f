"""The layer's rules over a normalised batch: ids, required fields, coded values, the city's extent."""

import numpy as np
import shapely

from gis.layers import LayerSpec
from gis.refresh.normalise import NormalisedBatch, Rejects

Extent = tuple[float, float, float, float]


def validate_batch(batch: NormalisedBatch, spec: LayerSpec, city_extent: Extent, rejects: Rejects) -> None:
    frame, fids, rows = batch.frame, batch.frame["fid"], batch.row_numbers()
    rejects.add_mask(rows, fids, fids.isna().to_numpy(), "fid: missing")
    for field in spec.fields:
        values = frame[field.name]
        if field.required:
            rejects.add_mask(rows, fids, values.isna().to_numpy(), f"{field.name}: required, missing")
        if field.values:
            unknown = values.notna() & ~values.isin(field.values)
            for position in np.flatnonzero(unknown.to_numpy()):
                rejects.add(int(rows[position]), fids.iloc[position],
                            f"{field.name}: {values.iloc[position]!r} is not one of {', '.join(field.values)}")
    bounds = shapely.bounds(batch.geometries)
    xmin, ymin, xmax, ymax = city_extent
    with np.errstate(invalid="ignore"):
        outside = (bounds[:, 0] < xmin) | (bounds[:, 1] < ymin) | (bounds[:, 2] > xmax) | (bounds[:, 3] > ymax)
    rejects.add_mask(rows, fids, outside, "geometry: outside the city's extent")
