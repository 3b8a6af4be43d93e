"""A run's input stack, from one of four sources: the stack cache, a Kelvins imgset, items already found
(a Prefect task's), or a search. :func:`find` searches, screens and harmonises the items; :func:`load`
returns the lazy stack with its clearance layers and what it was made from, as a value (the job keeps it)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pystac
import xarray as xr

from srcube.pipeline.assemble.stack import assemble, sharpening_plan, with_clearance
from srcube.pipeline.assemble.stackcache import StackCache, cache_key
from srcube.pipeline.errors import UnknownSensorError
from srcube.pipeline.plan import RunPlan
from srcube.pipeline.redact import redact
from srcube.pipeline.search import catalog as cat
from srcube.pipeline.sensors import SensorProfile, sensor_for_items


@dataclass(frozen=True)
class Found:
    """The items a run assembles (screened, each with its harmonisation decision), how many the search
    found, and the problems of those left out (JSON, for the cube's ``excluded_items``)."""

    items: list[pystac.Item]
    items_found: int
    excluded: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"items": [it.to_dict() for it in self.items], "excluded": self.excluded}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Found:
        items = [it if isinstance(it, pystac.Item) else pystac.Item.from_dict(dict(it)) for it in doc["items"]]
        excluded = [dict(p) for p in doc.get("excluded") or []]
        return cls(items, len(items) + len({p["item"] for p in excluded}), excluded)


@dataclass(frozen=True)
class Loaded:
    """A run's lazy stack (with clearance layers), its sensor and bands, and where it came from."""

    stack: xr.Dataset
    sensor: SensorProfile
    bands: tuple[str, ...]
    items_found: int
    excluded: list[dict[str, Any]] = field(default_factory=list)
    from_cache: bool = False
    cache_key: str = ""


def harmonization_catalog(plan: RunPlan) -> str | None:
    """The catalog name the harmonisation rules know this run's items by (None: tell from the items)."""
    return plan.profile.name if plan.profile.name in cat.PROFILES else None


def find(plan: RunPlan) -> Found:
    """Search, screen and (``harmonize="auto"``) decide each item's reflectance offset from its pixels:
    the items a run assembles, with their decisions attached (so later steps read nothing again). Typed
    errors: unknown collection, empty search, catalog down."""
    opts = plan.opts
    api = cat.open_catalog(plan.profile, retries=opts.catalog_retries, timeout=opts.catalog_timeout,
                           access=plan.access)
    cat.check_collection(api, plan.collection)
    searched = cat.search(api, plan.collection, plan.region, plan.days, max_cloud_cover=opts.max_cloud_cover,
                          max_items=opts.max_items)
    found, excluded = _screen(plan, searched)
    sensor = plan.sensor or sensor_for_items(found)
    if sensor is not None and (opts.harmonize or sensor.harmonize_modes[0]) == "auto":
        from srcube.pipeline.assemble.harmonize import annotate

        found = annotate(found, sensor, sensor.vocabulary.validate(plan.bands), catalog=harmonization_catalog(plan),
                         access=plan.access, settings=plan.read_settings)
    return Found(found, len(searched), excluded)


def _screen(plan: RunPlan, items: Sequence[pystac.Item]) -> tuple[list[pystac.Item], list[dict[str, Any]]]:
    """The items whose assets can be used (see :mod:`~srcube.pipeline.search.assets`) and the problems of
    the others (or AssetError with ``fail_on_error``). Items that lack an asset the run needs are left out
    whatever ``asset_check`` says (that takes no read); ``asset_check="blocks"`` also probes the assets."""
    if not items:
        return [], []
    from srcube.pipeline.search.assets import band_keys, screen_items

    sensor = plan.sensor or sensor_for_items(items)
    if sensor is None:
        return list(items), []  # load() says why it cannot go on
    voc = sensor.vocabulary
    bands = voc.validate(plan.bands)
    _, guides = sharpening_plan(sensor, bands, plan.opts.resolution, plan.sharpener.model)
    keys = band_keys(items, [voc.info(b) for b in (*bands, *guides, voc.qa_band)])
    good, problems = screen_items(items, keys, fail_on_error=plan.opts.fail_on_error, access=plan.access,
                                  settings=plan.read_settings, probe=plan.opts.asset_check != "none")
    return good, [p.to_json() for p in problems]


def load(plan: RunPlan, client: Any, found: Found | None = None,
         workers_ready: Callable[[], None] = lambda: None) -> Loaded:
    """The run's lazy stack: a Kelvins imgset's, the stack cache's (when it holds this request), or assembled
    from ``found`` (default: :func:`find`) and, with a stack cache, saved there. ``workers_ready`` runs
    before the first computation on ``client``."""
    if plan.profile.kind == "kelvins":
        loaded = _kelvins(plan)
    else:
        root = plan.opts.stack_cache
        cache = StackCache(root, plan.opts.store_options(root)) if root else None
        cached = _from_cache(plan, cache) if cache is not None and not plan.opts.refresh_cache else None
        loaded = cached or _assemble(plan, client, found or find(plan), cache, workers_ready)
    clear = loaded.sensor.validate_clear_classes(plan.opts.clear_classes)
    return Loaded(with_clearance(loaded.stack, loaded.sensor, clear), loaded.sensor, loaded.bands,
                  loaded.items_found, loaded.excluded, loaded.from_cache, loaded.cache_key)


def _cache_params(plan: RunPlan, bands: Sequence[str], sensor: SensorProfile) -> dict[str, Any]:
    from srcube.pipeline.testing import sample

    p, opts = plan.profile, plan.opts
    params: dict[str, Any] = {
        "catalog": p.name if p.kind != "stac" else redact(p.url), "collection": plan.collection,
        "bbox": plan.region.as_tuple(), "cell": plan.request.cell,
        "dates": str(plan.days), "bands": list(bands), "sensor": sensor.name,
        "harmonize": opts.harmonize, "resolution": opts.resolution, "max_cloud_cover": opts.max_cloud_cover,
        "max_items": opts.max_items, "sharpen": [plan.sharpener.method, plan.sharpener.weights_sha256],
        "halo": plan.tiles.margin,
    }
    if p.kind == "sample":
        params["sample"] = f"v{sample.SAMPLE_VERSION}-{sample.SEED}"
    return params


def _from_cache(plan: RunPlan, cache: StackCache) -> Loaded | None:
    """The cached stack of this request, when the sensor and bands are known before the search."""
    if plan.sensor is None or plan.bands is None:
        return None
    key = cache_key(_cache_params(plan, plan.bands, plan.sensor))
    stack = cache.load(key)
    if stack is None:
        return None
    n = len({i for ids in stack["items"].values for i in str(ids).split(",")})
    return Loaded(stack, plan.sensor, plan.bands, n, json.loads(str(stack.attrs.get("excluded_items", "[]"))),
                  from_cache=True, cache_key=key)


def _assemble(plan: RunPlan, client: Any, found: Found, cache: StackCache | None,
              workers_ready: Callable[[], None]) -> Loaded:
    sensor = plan.sensor or sensor_for_items(found.items)
    if sensor is None:
        raise UnknownSensorError(f"cannot tell the sensor of collection {plan.collection!r} from its id or its "
                                 "items' platform; pass sensor='sentinel-2' or 'proba-v'")
    bands, opts = sensor.vocabulary.validate(plan.bands), plan.opts
    stack = assemble(found.items, plan.region, bands, sensor=sensor, resolution=opts.resolution,
                     chunk=plan.tiles.tile, harmonize=opts.harmonize, georef_check=opts.georef_check,
                     catalog=harmonization_catalog(plan), access=plan.access, settings=plan.read_settings,
                     sharpen=plan.sharpener.model, halo=plan.tiles.margin)
    stack.attrs["excluded_items"] = json.dumps(found.excluded)
    key = ""
    if cache is not None:
        workers_ready()
        params = _cache_params(plan, bands, sensor)
        key = cache_key(params)
        stack = cache.save(key, stack, params, client, plan.tiles.tile)
    return Loaded(stack, sensor, bands, found.items_found, found.excluded, cache_key=key)


def _kelvins(plan: RunPlan) -> Loaded:
    from srcube.pipeline.sensors.probav import PROBAV, kelvins_stack

    stack, band, n = kelvins_stack(plan.profile.url, plan.bands, plan.region, plan.days, plan.tiles.tile)
    return Loaded(stack, PROBAV, (band,), n)
