"""Sensor profiles, one module each, registered by name: ``sentinel-2`` and ``proba-v``."""

from __future__ import annotations

from collections.abc import Sequence

import pystac

from srcube.pipeline.errors import UnknownSensorError
from srcube.pipeline.sensors.base import SensorProfile
from srcube.pipeline.sensors.probav import PROBAV
from srcube.pipeline.sensors.sentinel2 import SENTINEL2

SENSORS: dict[str, SensorProfile] = {s.name: s for s in (SENTINEL2, PROBAV)}


def list_sensors() -> list[str]:
    return sorted(SENSORS)


def get_sensor(name: str | SensorProfile) -> SensorProfile:
    if isinstance(name, SensorProfile):
        return name
    try:
        return SENSORS[name]
    except KeyError:
        raise UnknownSensorError(f"unknown sensor {name!r}; known sensors: {', '.join(list_sensors())}") from None


def sensor_for_collection(collection: str) -> SensorProfile | None:
    """The sensor a collection id names (by its markers), or None if it does not tell."""
    low = collection.lower()
    for sensor in SENSORS.values():
        if any(m in low for m in sensor.collection_markers):
            return sensor
    return None


def sensor_for_items(items: Sequence[pystac.Item]) -> SensorProfile | None:
    """The sensor of items from their ``platform``/``constellation`` properties."""
    for item in items:
        for key in ("constellation", "platform"):
            value = str(item.properties.get(key, "")).lower()
            for sensor in SENSORS.values():
                if value and value in sensor.platform_markers:
                    return sensor
    return None


__all__ = ["PROBAV", "SENSORS", "SENTINEL2", "SensorProfile", "get_sensor", "list_sensors",
           "sensor_for_collection", "sensor_for_items"]
