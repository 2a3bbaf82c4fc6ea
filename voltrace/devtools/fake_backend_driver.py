"""Runs inside cinder-volume, never in voltrace: cinder's fake driver with fault knobs.

Shipped as data: ``cinder_stack`` copies this file into the stack's ``drivers/`` directory,
puts that on cinder-volume's ``PYTHONPATH`` and sets, in the backend section,
``volume_driver = fake_backend_driver.FaultyFakeDriver``.

Per volume, from the create request's metadata (``{"volume": {"size": 1, "metadata":
{"fault": "backend"}}}``), so one running stack can produce every outcome:

* ``sleep_s=<seconds>``: sleep first (a green sleep: eventlet has patched ``time``), so the
  volume stays ``creating`` with its host set: a slow backend;
* ``fault=noresched``: raise ``MetadataUpdateFailure``, one of cinder's
  ``no_reschedule_types``: one ``VOLUME_VOLUME_008_012``, no reschedule;
* any other ``fault`` (e.g. ``backend``): raise ``VolumeBackendAPIException``, which the
  scheduler reschedules (on the same host: RetryFilter is not a default filter).

Per process, from cinder-volume's environment: ``FAKE_CAPACITY_GB`` makes the pool's
capacity finite (the stock fake reports ``infinite``), so CapacityFilter can reject.
"""

import os
import time

from cinder import exception
from cinder.tests import fake_driver


class FaultyFakeDriver(fake_driver.FakeLoggingVolumeDriver):
    def create_volume(self, volume):
        knobs = volume.metadata or {}
        if knobs.get("sleep_s"):
            time.sleep(float(knobs["sleep_s"]))
        fault = knobs.get("fault")
        if fault == "noresched":
            raise exception.MetadataUpdateFailure(reason="injected: fault=noresched")
        if fault:
            raise exception.VolumeBackendAPIException(data=f"injected: fault={fault}")
        return super().create_volume(volume)

    def _update_volume_stats(self):
        super()._update_volume_stats()
        capacity = os.environ.get("FAKE_CAPACITY_GB")
        if capacity:
            self._stats["pools"][0].update(
                total_capacity_gb=float(capacity),
                free_capacity_gb=float(capacity),
                reserved_percentage=0,
            )
