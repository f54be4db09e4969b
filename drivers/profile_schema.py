"""The JSON Schema of a profile file, generated from the models that read it.

``python -m drivers.profile_schema > docs/profile.schema.json`` regenerates it;
a test fails when the file and the models disagree. Editors that know JSON
Schema (VS Code's YAML extension, for one) then check a profile as it is typed.
"""

from __future__ import annotations

import json
import sys

from pydantic import TypeAdapter

from drivers.dlt645.profile import Dlt645Profile
from drivers.mqtt_profile import MqttDeviceProfile
from drivers.profile import DeviceProfile
from drivers.sl651.profile import Sl651Profile

#: A profile file is one of these, told apart by ``protocol`` (Modbus when absent).
ProfileFile = DeviceProfile | Sl651Profile | Dlt645Profile | MqttDeviceProfile


def render() -> str:
    """The schema as indented JSON, with a title and a trailing newline."""
    schema = TypeAdapter(ProfileFile).json_schema()
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "streetsense device profile",
        "description": (
            "One file per device type: Modbus (default), SL651-2014, DL/T 645-2007 or MQTT JSON."
        ),
        **schema,
    }
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
